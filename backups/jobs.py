"""Backups and restores as jobs: reserve a record, hand it to a worker, let the caller wait a little.

1. `*_enqueue` checks what can be checked at once (the clinic is free, the backup
   exists and is completed, the confirmation matches) and writes the job's record as
   `pending`: a bad request is still a 4xx, and a busy clinic still a 409.
2. The Celery job (backups.tasks) runs `*_run` in the clinic's schema: under the
   clinic's lock it claims the record (`pending` → `running`, once: a message
   delivered twice runs once), does the work, and leaves the record `completed` or
   `failed` with its reason. Whatever it ends with is in the audit log.
3. `job_wait` lets an API call wait up to JOB_WAIT_SECONDS for the record to settle:
   the seed's answer if it did, 202 with the record to poll if not.
With no broker configured the job runs inline inside step 1's caller.
A process that dies mid-job leaves the record `running` with nobody holding the
clinic's lock; the reaper (backups.reaper) finds it and reports it failed.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable, TypeVar

from django.conf import settings
from django.db import connection
from django.utils import timezone

from backups.errors import RestoreConfirmationError, RestoreJobNotPendingError
from backups.models import BackupRecord, RestoreJob
from backups.restore import backup_restore_as_new_tenant, backup_restore_in_place
from backups.selectors import backup_get_completed
from backups.services import backup_start, job_refused_if_busy
from bitacora.services import AuditContext, audit_failure
from backups.actions import BackupAction
from core.errors import OperationInProgressError
from core.exceptions import DomainError
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
    *, context: AuditContext, backup_type: str = BackupRecord.Type.MANUAL, created_by=None, prune_after: bool = False
) -> BackupRecord:
    """Reserve a backup of this clinic and start its job (inline when no broker is configured);
    prune_after applies the retention policy once the backup has succeeded (the nightly run)."""
    from backups.tasks import backup_task

    backup = backup_start(context=context, backup_type=backup_type, created_by=created_by)
    backup_task.delay(backup.pk, asdict(context), prune_after)
    return backup


def _clinic_is_free(schema: str) -> None:
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
    from backups.tasks import restore_task

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
            kind=RestoreJob.Kind.NEW_TENANT if new_schema else RestoreJob.Kind.IN_PLACE,
        )
    return job


def _restore_claim(job_id: int) -> bool:
    # Never twice: once a replay may have started, only the reaper decides what happened.
    return bool(
        RestoreJob.objects.filter(pk=job_id, status=RestoreJob.Status.PENDING)
        .update(status=RestoreJob.Status.RUNNING, started_at=timezone.now())
    )


def _restore_finish(job_id: int, error: BaseException | None) -> None:
    fields: dict = {"finished_at": timezone.now()}
    if error is None:
        fields.update(status=RestoreJob.Status.COMPLETED, phase=RestoreJob.Phase.DONE)
    else:
        fields.update(status=RestoreJob.Status.FAILED, error_code=getattr(error, "code", "restore_failed"),
                      error=str(error.message) if isinstance(error, DomainError) else type(error).__name__)
    RestoreJob.objects.filter(pk=job_id).update(**fields)


def restore_run(*, context: AuditContext, job_id: int, nombre: str = "") -> RestoreJob:
    """Run a pending restore job of this clinic; its record says how it ended."""
    schema = connection.schema_name
    # The same session takes the lock again inside the restore (advisory locks nest), so
    # between the claim and the restore nobody, the reaper included, finds the clinic free.
    with job_refused_if_busy(RestoreJob, job_id), tenant_operation_lock(schema):
        if not _restore_claim(job_id):
            raise RestoreJobNotPendingError(details={"id": job_id})
        job = RestoreJob.objects.get(pk=job_id)
        run: Callable[[], object]
        if job.kind == RestoreJob.Kind.NEW_TENANT:
            run = lambda: backup_restore_as_new_tenant(  # noqa: E731
                context=context, backup_id=job.backup_id, schema_name=job.new_schema,
                nombre=nombre or job.new_schema, job=job)
        else:
            run = lambda: backup_restore_in_place(context=context, backup_id=job.backup_id, confirm=schema, job=job)  # noqa: E731
        try:
            run()
        except Exception as exc:
            _restore_finish(job_id, exc)
            raise
        _restore_finish(job_id, None)
    return RestoreJob.objects.get(pk=job_id)
