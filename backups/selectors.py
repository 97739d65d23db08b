from __future__ import annotations

from django.db.models import QuerySet

from backups.errors import BackupNotCompletedError, BackupNotFoundError, RestoreJobNotFoundError
from backups.models import BackupRecord, RestoreJob


def backup_list(*, backup_type: str | None = None, status: str | None = None) -> QuerySet[BackupRecord]:
    """This clinic's backups, newest first."""
    records = BackupRecord.objects.select_related("created_by").order_by("-created_at", "-id")
    if backup_type:
        records = records.filter(backup_type=backup_type)
    if status:
        records = records.filter(status=status)
    return records


def backup_get(*, backup_id: int) -> BackupRecord:
    """One backup of this clinic; another clinic's id is simply unknown here."""
    record = BackupRecord.objects.select_related("created_by").filter(pk=backup_id).first()
    if record is None:
        raise BackupNotFoundError(details={"id": backup_id})
    return record


def backup_get_completed(*, backup_id: int) -> BackupRecord:
    """One backup of this clinic that can be downloaded or restored (409 while running or failed)."""
    backup = backup_get(backup_id=backup_id)
    if backup.status != BackupRecord.Status.COMPLETED:
        raise BackupNotCompletedError(details={"id": backup.pk, "status": backup.status})
    return backup


def restore_job_get(*, job_id: int) -> RestoreJob:
    """One restore of this clinic; another clinic's id is unknown here."""
    job = RestoreJob.objects.filter(pk=job_id).first()
    if job is None:
        raise RestoreJobNotFoundError(details={"id": job_id})
    return job


def backup_last_completed() -> BackupRecord | None:
    """This clinic's newest completed backup, if any."""
    return BackupRecord.objects.filter(status=BackupRecord.Status.COMPLETED).order_by("-created_at", "-id").first()
