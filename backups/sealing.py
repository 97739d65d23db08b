"""What operators do with the keys that seal backups (backups.storage.keys has the layout).

- clinic_key_rotate: a new key for this clinic, under its lock (no backup seals meanwhile).
  New dumps, lists and contents stored from then on are sealed to it; contents already
  stored keep the key that sealed them, and every key of the clinic stays, so old backups
  open as before. No data is re-encrypted.
- platform_keys_rewrap: every clinic key in the backups storage (registered clinics or not:
  a clinic deleted from the database still has backups) wrapped to the platform's current
  recipients, so that an old platform key can be retired. Only key objects are read and
  written; a rewrap cut short is finished by running it again (backups.storage.keys).
- clinic_keys_shred, crypto-shredding a clinic, in this order:
  1. refuse unless the confirmation is the clinic's schema name; take the clinic's lock;
     audit the start (a process killed after step 2 still leaves a trace);
  2. delete every object of the clinic's keys folder and read the folder back: if any is
     still there, or a delete failed, fail loudly with nothing else changed (the data
     objects, the records), and audited;
  3. only then, best effort, delete every other object under the clinic's folder, read what
     is left, and delete the clinic's backup records (what they describe can no longer be
     read). What is left is reported: sealed objects no key opens any more, and plain ones
     written before sealing, which only deleting removes.
  The clinic's keys existed nowhere else (not in the database, not on disk), so after
  step 2 no key the service holds opens any of its objects, wherever copies of them are.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

from django.core.files.storage import Storage
from django.db import connection

from backups.actions import BackupAction
from backups.errors import ShredConfirmationError
from backups.models import BackupRecord
from backups.storage.age_format import MAGIC
from backups.storage.keys import KEYS_FOLDER, keys_rewrap, keys_rotate, keys_shred, platform_keys_check
from backups.storage.objects import backup_storage
from bitacora.services import AuditContext, audit_failure, record
from core.locks import tenant_operation_lock

logger = logging.getLogger(__name__)
TARGET_TYPE = "clinic"
REWRAP_WORKERS = 8  # clinics rewrapped at once: on Supabase each is a few round trips
LEFT_LISTED = 20


def clinic_key_rotate(*, context: AuditContext) -> dict:
    """A new key for this clinic: its new objects are sealed to it, the old ones still open."""
    schema = connection.schema_name
    with audit_failure(context=context, action=BackupAction.KEY_ROTATE, target_type=TARGET_TYPE, target_id=schema):
        with tenant_operation_lock(schema):
            key = keys_rotate(backup_storage().inner, schema)
    details = {"key_id": key.key_id, "recipient": str(key.recipient)}
    record(context=context, action=BackupAction.KEY_ROTATE, target_type=TARGET_TYPE, target_id=schema, details=details)
    return details


def _clinic_folders(storage: Storage) -> list[str]:
    try:
        return sorted(storage.listdir("")[0])
    except FileNotFoundError:
        return []


def platform_keys_rewrap(*, clinics: list[str] | None = None) -> dict[str, int]:
    """Each clinic's keys wrapped to the platform's current recipients: clinic → keys rewrapped.

    Checked first: the configured identity opens what the current recipients wrap (else a
    rewrapped key could never be read again, and nothing is touched)."""
    platform_keys_check()
    storage = backup_storage().inner
    clinics = clinics if clinics is not None else _clinic_folders(storage)
    with ThreadPoolExecutor(REWRAP_WORKERS, thread_name_prefix="rewrap") as pool:
        counts = dict(zip(clinics, pool.map(lambda clinic: keys_rewrap(storage, clinic), clinics)))
    logger.info("rewrapped %s key(s) of %s clinic folder(s)", sum(counts.values()), len(counts))
    return counts


@dataclass
class ShredReport:
    """What a shred did: keys destroyed, objects deleted, what is left (sealed or plain), records deleted."""

    keys_deleted: int = 0
    objects_deleted: int = 0
    left_sealed: list[str] = field(default_factory=list)
    left_plain: list[str] = field(default_factory=list)
    records_deleted: int = 0

    def as_details(self) -> dict:
        return {"keys_deleted": self.keys_deleted, "objects_deleted": self.objects_deleted,
                "left_sealed": len(self.left_sealed), "left_plain": len(self.left_plain),
                "left": (self.left_plain + self.left_sealed)[:LEFT_LISTED], "records_deleted": self.records_deleted}


def _objects_under(storage: Storage, folder: str) -> Iterator[str]:
    try:
        folders, objects = storage.listdir(folder)
    except FileNotFoundError:
        return
    for name in objects:
        yield f"{folder}/{name}"
    for name in folders:
        if f"{folder}/{name}" != f"{folder.split('/')[0]}/{KEYS_FOLDER}":
            yield from _objects_under(storage, f"{folder}/{name}")


def _is_plain(storage: Storage, name: str) -> bool:
    try:
        with storage.open(name, "rb") as stored:
            return stored.read(len(MAGIC)) != MAGIC
    except Exception:  # noqa: BLE001 - unreadable: say so as if plain, the worst case
        return True


def _data_delete(storage: Storage, schema: str, report: ShredReport) -> None:
    """Step 3: every object under the clinic's folder deleted, best effort; what is left, read back."""
    for name in list(_objects_under(storage, schema)):
        try:
            storage.delete(name)
        except Exception:  # noqa: BLE001 - best effort: what is left is read back below
            logger.exception("shred of %s: could not delete an object", schema)
    left = list(_objects_under(storage, schema))
    for name in left:
        (report.left_plain if _is_plain(storage, name) else report.left_sealed).append(name)


def clinic_keys_shred(*, context: AuditContext, confirm: str) -> ShredReport:
    """Crypto-shred this clinic's backups: destroy its keys, then its objects and records (see the map above)."""
    schema = connection.schema_name
    report = ShredReport()
    with audit_failure(context=context, action=BackupAction.KEYS_SHRED, target_type=TARGET_TYPE, target_id=schema):
        if confirm != schema:
            raise ShredConfirmationError(details={"expected": schema})
        with tenant_operation_lock(schema):
            record(context=context, action=BackupAction.KEYS_SHRED_START, target_type=TARGET_TYPE, target_id=schema)
            storage = backup_storage().inner
            report.keys_deleted = keys_shred(storage, schema)
            before = sum(1 for _name in _objects_under(storage, schema))
            _data_delete(storage, schema, report)
            report.objects_deleted = before - len(report.left_sealed) - len(report.left_plain)
            report.records_deleted = BackupRecord.objects.count()
            BackupRecord.objects.all().delete()
    record(context=context, action=BackupAction.KEYS_SHRED, target_type=TARGET_TYPE, target_id=schema,
           details=report.as_details())
    if report.left_plain or report.left_sealed:
        logger.warning("shred of %s left %s sealed and %s plain object(s)", schema, len(report.left_sealed),
                       len(report.left_plain))
    return report
