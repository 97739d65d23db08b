"""Run a restore job that backups.jobs.enqueue recorded `pending`: claim it once, restore,
and leave the record `completed` or `failed` with its reason. The backup's own run is
backups.services.backup_run; both are called by the Celery tasks (backups.tasks)."""
from __future__ import annotations

from typing import Callable

from django.db import connection
from django.utils import timezone

from backups.errors import RestoreJobNotPendingError
from backups.models import RestoreJob
from backups.restore import backup_restore_as_new_tenant, backup_restore_in_place
from backups.services import job_refused_if_busy
from bitacora.services import AuditContext
from core.exceptions import DomainError
from core.locks import tenant_operation_lock


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
