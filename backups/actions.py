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
    KEY_ROTATE = "backup.key_rotate"  # a new clinic key seals new objects (backups.sealing)
    KEYS_SHRED_START = "backup.keys_shred.start"
    KEYS_SHRED = "backup.keys_shred"  # the clinic's keys destroyed: its backups can no longer be opened
    DRILL = "backup.drill"  # a restore drill: the backup replayed into a scratch schema and checked
