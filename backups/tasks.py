"""Celery jobs of the backups module. Each runs in the clinic's schema that was active
when it was sent (tenant-schemas-celery carries it in the message); the nightly fan-out
and the reaper run in the public schema and address clinics by name."""
from __future__ import annotations

import logging
from dataclasses import asdict

from celery.signals import worker_ready
from django.conf import settings
from django.db import connection
from django_tenants.utils import tenant_context

from alertas.nights import night_job_ended
from backups.alerting import overdue_alerts
from backups.drills.plan import drills_due
from backups.drills.run import drill_run
from backups.errors import BackupNotPendingError, RestoreJobNotPendingError, StorageUnavailableError
from backups.jobs.reaper import reap
from backups.jobs.run import restore_run
from backups.retention import backup_prune
from backups.selectors import backup_list
from backups.services import backup_run, backup_verify
from bitacora.services import AuditContext
from core.celery import app
from core.exceptions import DomainError

logger = logging.getLogger(__name__)
DRILL_CONTEXT = AuditContext.system("restore drills (beat)")


@app.task(bind=True, name="backups.tasks.backup_task", max_retries=settings.BACKUP_STORAGE_RETRIES)
def backup_task(self, backup_id: int, context: dict, prune_after: bool = False, night_id: int | None = None) -> None:
    may_retry = not self.request.is_eager and self.request.retries < self.max_retries
    audit = AuditContext(**context)
    ended_ok: bool | None = None  # None: not ended (a retry is coming, or the job had already run)
    try:
        backup_run(context=audit, backup_id=backup_id, retry_transient=may_retry)
        ended_ok = True
        if prune_after:
            backup_prune(context=audit, apply=True)
    except StorageUnavailableError as exc:
        if not may_retry:
            ended_ok = False if ended_ok is None else ended_ok
            raise
        # The record is `pending` again; the storage gets 30 s, 60 s, 120 s… to come back.
        raise self.retry(exc=exc, countdown=settings.BACKUP_RETRY_BASE_SECONDS * 2 ** self.request.retries) from None
    except BackupNotPendingError:
        logger.warning("backup %s was delivered again after it started; not run twice", backup_id)
    except DomainError as exc:
        ended_ok = False if ended_ok is None else ended_ok
        if self.request.is_eager:
            raise  # inline: the caller answers with the error itself
        logger.warning("backup %s failed: %s", backup_id, exc.code)  # recorded on the backup and audited
    except Exception:
        ended_ok = False if ended_ok is None else ended_ok
        raise
    finally:
        if night_id is not None and ended_ok is not None:  # the nightly run's heartbeat (alertas.nights)
            night_job_ended(night_id=night_id, schema=connection.schema_name, ok=ended_ok, backup_id=backup_id)


@app.task(bind=True, name="backups.tasks.restore_task")
def restore_task(self, job_id: int, context: dict, nombre: str = "") -> None:
    try:
        restore_run(context=AuditContext(**context), job_id=job_id, nombre=nombre)
    except RestoreJobNotPendingError:
        logger.warning("restore %s was delivered again after it started; a restore never runs twice", job_id)
    except DomainError as exc:
        if self.request.is_eager:
            raise
        logger.warning("restore %s failed: %s", job_id, exc.code)


@app.task(bind=True, name="backups.tasks.drill_task")
def drill_task(self, context: dict, backup_id: int | None = None) -> None:
    """A restore drill of the clinic; its outcome is on the backup's record and in the audit log."""
    try:
        drill_run(context=AuditContext(**context), backup_id=backup_id)
    except DomainError as exc:  # nothing to drill, or a drill of the clinic already running
        if self.request.is_eager:
            raise
        logger.warning("drill not run: %s", exc.code)


@app.task(name="backups.tasks.drill_night_task")
def drill_night_task() -> list[str]:
    """Tonight's share of the clinics (backups.drills.plan), one drill job each."""
    queued = []
    for tenant in drills_due():
        with tenant_context(tenant):  # the job carries the clinic it was sent from
            try:
                drill_task.delay(asdict(DRILL_CONTEXT))
                queued.append(tenant.schema_name)
            except DomainError as exc:  # inline (no broker): one clinic's refusal must not stop the night
                logger.warning("drill of %s not run: %s", tenant.schema_name, exc.code)
    return queued


@app.task(name="backups.tasks.overdue_alert_task")
def overdue_alert_task() -> list[str]:
    """Clinics without a completed backup in BACKUP_OVERDUE_AFTER_HOURS, alerted once a day each."""
    return overdue_alerts()


@app.task(name="backups.tasks.verify_task")
def verify_task(context: dict) -> dict:
    """Re-read every completed backup of the clinic and mark what it finds."""
    audit = AuditContext(**context)
    return {backup.pk: backup_verify(context=audit, backup=backup) for backup in backup_list(status="completed")}


@app.task(name="backups.tasks.prune_task")
def prune_task(context: dict) -> list[int]:
    """Apply the retention policy to the clinic; the ids it deleted."""
    return backup_prune(context=AuditContext(**context), apply=True).delete


@app.task(name="backups.tasks.reap_task")
def reap_task() -> dict:
    return reap().as_dict()


@worker_ready.connect
def _reap_when_a_worker_starts(sender=None, **kwargs) -> None:
    # What the previous worker was doing when it was killed (a deploy, the memory limit).
    logger.info("reaper at worker start: %s", reap().as_dict())
