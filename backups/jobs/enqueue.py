"""Start a job: check what can be checked at once, record it `pending`, hand it to Celery,
and let an API call wait a little for it (the steps are in backups.jobs' map)."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import TypeVar

from django.conf import settings
from django.db import connection

from backups.actions import BackupAction
from backups.errors import RestoreConfirmationError
from backups.jobs.reaper import clinic_heal
from backups.models import BackupRecord, RestoreJob
from backups.selectors import backup_get_completed
from backups.services import backup_start
from bitacora.services import AuditContext, audit_failure
from core.errors import OperationInProgressError
from core.locks import tenant_operation_lock
from core.services import tenant_name_check

Record = TypeVar("Record", BackupRecord, RestoreJob)
WAIT_POLL_SECONDS = 0.2


def job_wait(record: Record, *, seconds: float | None = None) -> Record:
    """The record once its job finished, or as it is when the wait runs out."""
    deadline = time.monotonic() + (settings.JOB_WAIT_SECONDS if seconds is None else seconds)
    while True:
        record.refresh_from_db()
        if record.status not in record.ACTIVE_STATUSES or time.monotonic() >= deadline:
            return record
        time.sleep(WAIT_POLL_SECONDS)


def backup_enqueue(
    *, context: AuditContext, backup_type: str = BackupRecord.Type.MANUAL, created_by=None, prune_after: bool = False,
    night_id: int | None = None,
) -> BackupRecord:
    """Reserve a backup of this clinic and start its job (inline when no broker is configured);
    prune_after applies the retention policy once the backup has succeeded (the nightly run),
    whose job ends its row of the night (night_id, alertas.nights)."""
    from backups.tasks import backup_task  # Celery loads only where a job is sent (core.celery)

    backup = backup_start(context=context, backup_type=backup_type, created_by=created_by)
    backup_task.delay(backup.pk, asdict(context), prune_after, night_id)
    return backup


def _clinic_is_free(schema: str) -> None:
    clinic_heal(schema)
    with tenant_operation_lock(schema):
        busy = (
            BackupRecord.objects.filter(status__in=BackupRecord.ACTIVE_STATUSES).exists()
            or RestoreJob.objects.filter(status__in=RestoreJob.ACTIVE_STATUSES).exists()
        )
    if busy:
        raise OperationInProgressError()


def restore_enqueue(
    *, context: AuditContext, backup_id: int, confirm: str = "", created_by=None, new_schema: str = "", nombre: str = ""
) -> RestoreJob:
    """Check a restore of this clinic (in place, or into new_schema) and start its job."""
    from backups.tasks import restore_task  # Celery loads only where a job is sent (core.celery)

    job = restore_prepare(context=context, backup_id=backup_id, confirm=confirm, created_by=created_by, new_schema=new_schema)
    restore_task.delay(job.pk, asdict(context), nombre)
    return job


def restore_prepare(
    *, context: AuditContext, backup_id: int, confirm: str = "", created_by=None, new_schema: str = ""
) -> RestoreJob:
    """Check a restore of this clinic and record it `pending`, for restore_run (here or in a worker)."""
    schema = connection.schema_name
    action = BackupAction.RESTORE_AS_NEW_TENANT if new_schema else BackupAction.RESTORE
    with audit_failure(context=context, action=action, target_type="backup", target_id=backup_id):
        if new_schema:
            tenant_name_check(new_schema)
        elif confirm != schema:
            raise RestoreConfirmationError(details={"expected": schema})
        backup = backup_get_completed(backup_id=backup_id)
        _clinic_is_free(schema)
        job = RestoreJob.objects.create(
            backup=backup, backup_file_name=backup.file_name, created_by=created_by, new_schema=new_schema,
            kind=RestoreJob.Kind.NEW_TENANT if new_schema else RestoreJob.Kind.IN_PLACE, total_bytes=backup.sql_size or 0,
        )
    return job
