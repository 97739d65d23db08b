from __future__ import annotations

from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Max


def migration_state() -> dict[str, str]:
    """The latest applied migration per app in the current schema (names sort by number)."""
    latest = MigrationRecorder(connection).migration_qs.values("app").annotate(latest=Max("name")).order_by("app")
    return {row["app"]: row["latest"] for row in latest}
