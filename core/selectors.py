from __future__ import annotations

from django.db import connection
from django.db.migrations.recorder import MigrationRecorder


def migration_state() -> dict[str, str]:
    """The latest applied migration per app in the current schema (names sort by number)."""
    latest: dict[str, str] = {}
    for app, name in MigrationRecorder(connection).migration_qs.values_list("app", "name"):
        if name > latest.get(app, ""):
            latest[app] = name
    return dict(sorted(latest.items()))
