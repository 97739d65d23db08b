"""Backups of a clinic's schema: create, download, delete, verify. Every call is audited."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.db import connection
from django.utils import timezone

from backups.actions import BackupAction
from backups.errors import (
    BackupFailedError,
    BackupNotCompletedError,
    BackupNotPendingError,
    StorageObjectMissingError,
    StorageUnavailableError,
)
from backups.models import BackupRecord
from backups.pg_tools import CHUNK_SIZE, DumpResult, PgBinaries, PgConnectionParams, dump_schema, find_binaries
from backups.selectors import backup_get, backup_get_completed
from backups.storage import backup_storage, storage_copy, storage_open
from bitacora.models import Outcome
from bitacora.services import AuditContext, audit_failure, record
from core.errors import OperationInProgressError
from core.exceptions import DomainError
from core.faults import die_now, kill_after_bytes, kill_point
from core.files import file_name_timestamp, temporary_file
from core.locks import tenant_operation_lock
from core.selectors import migration_state

logger = logging.getLogger(__name__)

MANIFEST_FORMAT_VERSION = 1
TARGET_TYPE = "backup"


def pg_binaries() -> PgBinaries:
    """pg_dump/psql matching the server's major version, or a clear error before any work."""
    return find_binaries(server_major=connection.pg_version // 10000, configured_dir=settings.PG_BIN_DIR)


def database_params() -> PgConnectionParams:
    return PgConnectionParams.from_settings(connection.settings_dict)


def _server_version() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def _unused_path(schema: str, backup_type: str) -> tuple[str, str]:
    """backup_<schema>_<YYYY-MM-DD_HH-MM-SS>.sql.gz under <schema>/<type>/, never an existing one.

    Choosing the name here (rather than letting the storage add a random suffix)
    means a failed upload always knows which object to remove.
    """
    stamp = file_name_timestamp()
    storage = backup_storage()
    for attempt in range(100):
        suffix = f"-{attempt}" if attempt else ""
        file_name = f"backup_{schema}_{stamp}{suffix}.sql.gz"
        file_path = f"{schema}/{backup_type}/{file_name}"
        if not storage.exists(file_path) and not BackupRecord.objects.filter(file_path=file_path).exists():
            return file_name, file_path
    raise BackupFailedError(details={"reason": "no free file name"})


def _remove_partial_object(file_path: str) -> None:
    try:
        storage = backup_storage()
        if storage.exists(file_path):
            storage.delete(file_path)
    except Exception:  # noqa: BLE001 - the original failure matters more; this one is logged
        logger.exception("could not remove the partial object %s", file_path)


class _KilledAfterBytes:
    """A test's kill point on a stream: the process dies once `limit` bytes went through."""

    def __init__(self, source: BinaryIO, limit: int):
        self._source, self._limit, self._count = source, limit, 0

    def read(self, size: int = -1) -> bytes:
        if self._count >= self._limit:
            die_now()
        chunk = self._source.read(min(size if size and size > 0 else CHUNK_SIZE, self._limit - self._count))
        self._count += len(chunk)
        return chunk

    def __getattr__(self, name):
        return getattr(self._source, name)


def backup_start(*, context: AuditContext, backup_type: str = BackupRecord.Type.MANUAL, created_by=None) -> BackupRecord:
    """Reserve a backup: a `pending` record with its file name, once the clinic is free (else 409)."""
    schema = connection.schema_name
    with audit_failure(context=context, action=BackupAction.CREATE):
        pg_binaries()  # a missing or mismatched pg_dump is refused before anything is recorded
        with tenant_operation_lock(schema):  # free now, or 409 at once rather than a queued job that will fail
            if BackupRecord.objects.filter(status__in=BackupRecord.ACTIVE_STATUSES).exists():
                raise OperationInProgressError()
            file_name, file_path = _unused_path(schema, backup_type)
            return BackupRecord.objects.create(
                file_name=file_name, file_path=file_path, backup_type=backup_type, created_by=created_by,
                status=BackupRecord.Status.PENDING,
            )


@contextmanager
def job_refused_if_busy(model, record_id: int):
    """A job that cannot start (the clinic busy with another operation) ends `failed`, not `pending` forever."""
    try:
        yield
    except OperationInProgressError as exc:
        model.objects.filter(pk=record_id, status=model.Status.PENDING).update(
            status=model.Status.FAILED, error_code=exc.code, error=str(exc.message), finished_at=timezone.now()
        )
        raise


def _backup_claim(backup_id: int) -> bool:
    """pending → running, once: a job delivered twice (a worker died before acknowledging) runs once."""
    return bool(
        BackupRecord.objects.filter(pk=backup_id, status=BackupRecord.Status.PENDING)
        .update(status=BackupRecord.Status.RUNNING, error="", error_code="")
    )


def _backup_dump_and_store(backup: BackupRecord, binaries: PgBinaries) -> DumpResult:
    schema = connection.schema_name

    def progress(size: int) -> None:
        BackupRecord.objects.filter(pk=backup.pk).update(progress_bytes=size)

    with temporary_file() as spool:
        result = dump_schema(binaries=binaries, params=database_params(), schema=schema, destination=spool, progress=progress)
        spool.seek(0)
        kill_point("backup.before_upload")
        limit = kill_after_bytes("backup.upload")
        source = spool if limit is None else _KilledAfterBytes(spool, limit)
        backup_storage().save(backup.file_path, File(source, name=backup.file_name))
    return result


def backup_fail(*, backup: BackupRecord, error: BaseException | str, code: str = "") -> None:
    """Mark a backup failed with a readable reason and remove whatever part of its object was stored."""
    _remove_partial_object(backup.file_path)
    if isinstance(error, DomainError):
        message, code = str(error.message), error.code
    elif isinstance(error, BaseException):
        message, code = type(error).__name__, code or "backup_failed"
    else:
        message = error
    BackupRecord.objects.filter(pk=backup.pk).update(
        status=BackupRecord.Status.FAILED, error=message, error_code=code, finished_at=timezone.now()
    )


def backup_run(*, context: AuditContext, backup_id: int, retry_transient: bool = False) -> BackupRecord:
    """Dump a reserved backup (pg_dump → gzip → sha256 → storage) and record it.

    Memory stays bounded: the dump streams through an anonymous temporary file. The
    record is `completed` only once the object is stored and its checksum recorded;
    on any failure the object is removed and the record is `failed` with the reason.
    With retry_transient, a storage outage puts the record back to `pending` and
    re-raises, for the job to try again later.
    """
    schema = connection.schema_name
    with audit_failure(context=context, action=BackupAction.CREATE, target_type=TARGET_TYPE, target_id=backup_id):
        binaries = pg_binaries()
        with job_refused_if_busy(BackupRecord, backup_id), tenant_operation_lock(schema):
            if not _backup_claim(backup_id):
                raise BackupNotPendingError(details={"id": backup_id})
            backup = backup_get(backup_id=backup_id)
            backup.manifest = {
                "format_version": MANIFEST_FORMAT_VERSION,
                "tenant_schema": schema,
                "server_version": _server_version(),
                "pg_dump_version": binaries.version,
                "compression": "gzip",
                "migrations": migration_state(),
            }
            backup.save(update_fields=["manifest"])
            try:
                result = _backup_dump_and_store(backup, binaries)
            except StorageUnavailableError as exc:
                _remove_partial_object(backup.file_path)
                if not retry_transient:
                    backup_fail(backup=backup, error=exc)
                    raise
                BackupRecord.objects.filter(pk=backup.pk).update(
                    status=BackupRecord.Status.PENDING, progress_bytes=0, error=str(exc.message), error_code=exc.code
                )
                raise
            except Exception as exc:
                backup_fail(backup=backup, error=exc)
                logger.exception("backup %s of %s failed", backup.file_name, schema)
                if isinstance(exc, DomainError):
                    raise
                raise BackupFailedError(details={"id": backup.pk}) from exc
            backup.file_size = result.size
            backup.sha256 = result.sha256
            backup.progress_bytes = result.size
            backup.status = BackupRecord.Status.COMPLETED
            backup.finished_at = timezone.now()
            backup.save(update_fields=["file_size", "sha256", "progress_bytes", "status", "finished_at"])
    record(
        context=context,
        action=BackupAction.CREATE,
        target_type=TARGET_TYPE,
        target_id=backup.pk,
        details={"file_name": backup.file_name, "file_size": backup.file_size, "backup_type": backup.backup_type},
    )
    return backup


def backup_create(*, context: AuditContext, backup_type: str = BackupRecord.Type.MANUAL, created_by=None) -> BackupRecord:
    """Back this clinic up now, in this process (a command, the admin, an inline job)."""
    backup = backup_start(context=context, backup_type=backup_type, created_by=created_by)
    return backup_run(context=context, backup_id=backup.pk)


def backup_open(*, context: AuditContext, backup_id: int) -> tuple[BackupRecord, BinaryIO]:
    """A completed backup and its stored file, opened for streaming."""
    with audit_failure(context=context, action=BackupAction.DOWNLOAD, target_type=TARGET_TYPE, target_id=backup_id):
        backup = backup_get_completed(backup_id=backup_id)
        stored_file = storage_open(backup.file_path)
    record(context=context, action=BackupAction.DOWNLOAD, target_type=TARGET_TYPE, target_id=backup.pk, details={"file_name": backup.file_name})
    return backup, stored_file


def backup_delete(*, context: AuditContext, backup_id: int) -> None:
    """Delete the stored object, then the record (an object already gone still deletes the record)."""
    with audit_failure(context=context, action=BackupAction.DELETE, target_type=TARGET_TYPE, target_id=backup_id):
        backup = backup_get(backup_id=backup_id)
        if backup.status == BackupRecord.Status.RUNNING:
            raise BackupNotCompletedError(details={"id": backup.pk, "status": backup.status})
        backup_storage().delete(backup.file_path)
        backup.delete()
    record(context=context, action=BackupAction.DELETE, target_type=TARGET_TYPE, target_id=backup_id, details={"file_name": backup.file_name})


def backup_set_keep(*, context: AuditContext, backup_id: int, keep: bool) -> BackupRecord:
    """Mark (or unmark) a backup so the retention policy never deletes it."""
    with audit_failure(context=context, action=BackupAction.KEEP, target_type=TARGET_TYPE, target_id=backup_id):
        backup = backup_get(backup_id=backup_id)
        previous = backup.keep
        backup.keep = keep
        backup.save(update_fields=["keep"])
    record(
        context=context,
        action=BackupAction.KEEP,
        target_type=TARGET_TYPE,
        target_id=backup.pk,
        details={"file_name": backup.file_name, "keep": keep, "previous": previous},
    )
    return backup


def backup_mark_integrity(*, backup: BackupRecord, integrity: str) -> None:
    """Record what the last re-read of the stored object found."""
    backup.integrity = integrity
    backup.verified_at = timezone.now()
    backup.save(update_fields=["integrity", "verified_at"])


def backup_verify(*, context: AuditContext, backup: BackupRecord) -> str:
    """Compare the stored object's sha256 with the record's; mark and audit the result."""
    try:
        actual = storage_copy(backup.file_path).sha256
        integrity = BackupRecord.Integrity.OK if actual == backup.sha256 else BackupRecord.Integrity.MISMATCH
    except StorageObjectMissingError:
        actual, integrity = "", BackupRecord.Integrity.MISSING
    backup_mark_integrity(backup=backup, integrity=integrity)
    record(
        context=context,
        action=BackupAction.VERIFY,
        outcome=Outcome.OK if integrity == BackupRecord.Integrity.OK else Outcome.ERROR,
        target_type=TARGET_TYPE,
        target_id=backup.pk,
        details={"integrity": integrity, "expected_sha256": backup.sha256, "actual_sha256": actual},
    )
    return integrity
