"""Backup records for tests, with or without their stored object."""
from __future__ import annotations

from datetime import timedelta

from django.core.files.base import ContentFile
from django.utils import timezone

from backups.models import BackupRecord
from backups.storage.objects import backup_storage


def stored_backup(*, age: timedelta, status: str = "completed", keep: bool = False, stored: bool = True) -> BackupRecord:
    """A record created `age` ago, with its object in the backups storage when `stored`."""
    created_at = timezone.now() - age
    file_name = f"backup_test_a_{created_at:%Y-%m-%d_%H-%M-%S}.sql.gz"
    file_path = f"test_a/automatic/{file_name}"
    if stored:
        backup_storage().save(file_path, ContentFile(b"dump"))
    backup = BackupRecord.objects.create(
        file_name=file_name, file_path=file_path, backup_type="automatic", status=status, keep=keep
    )
    # created_at is auto_now_add: set the recorded moment afterwards
    BackupRecord.objects.filter(pk=backup.pk).update(created_at=created_at)
    return backup
