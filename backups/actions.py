"""The audit-log actions of the backups module, one name each."""
from enum import StrEnum


class BackupAction(StrEnum):
    CREATE = "backup.create"
    DOWNLOAD = "backup.download"
    DOWNLOAD_FILES = "backup.download_files"
    FILES = "backup.files"  # a file operation that failed (a file missing at backup or restore time)
    DELETE = "backup.delete"
    KEEP = "backup.keep"
    VERIFY = "backup.verify"
    RESTORE_START = "backup.restore.start"
    RESTORE = "backup.restore"
    RESTORE_AS_NEW_TENANT = "backup.restore_as_new_tenant"
    DRILL = "backup.drill"  # a restore drill: the backup replayed into a scratch schema and checked
