"""A drill as a job, for one clinic now (the command, the platform page): queued for a worker,
or run inline when no broker is configured. Tonight's share of the clinics is
backups.tasks.drill_night_task, with backups.drills.plan."""
from __future__ import annotations

from dataclasses import asdict

from bitacora.services import AuditContext


def drill_enqueue(*, context: AuditContext, backup_id: int | None = None) -> None:
    """Start a drill of this clinic's backup (its latest completed one unless given)."""
    from backups.tasks import drill_task  # Celery loads only where a job is sent (core.celery)

    drill_task.delay(asdict(context), backup_id)
