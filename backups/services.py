"""Backups of a clinic's schema: create, download, delete, verify. Every call is audited."""
from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from django.conf import settings
from django.core.files import File
from django.db import connection
from django.utils import timezone

from backups.actions import BackupAction
from backups.alerting import backup_completed_alerts, backup_failure_alerted
from backups.errors import (
    BackupChecksumMismatchError,
    BackupFailedError,
    BackupFileError,
    BackupNotCompletedError,
    BackupNotPendingError,
    StorageObjectMissingError,
    StorageUnavailableError,
)
from backups.models import BackupRecord
from backups.dump.cached import SnapshotUnstable, clinic_dump_write, clinic_snapshot, snapshot_migration_state
from backups.dump.reference import reference_get
from backups.dump.pg_tools import DumpResult, PgBinaries, PgConnectionParams, dump_schema, find_binaries
from backups.dump.tables import ALGORITHM as TABLE_CHECKSUM_ALGORITHM
from backups.selectors import backup_get, backup_get_completed
from backups.files.media import (
    MISSING_LISTED,
    audit_file_warnings,
    backup_files_check,
    exported_snapshot,
    file_object_key,
    file_objects_only_named_by,
    paths_read,
    paths_write,
)
from backups.files.store import StoredFiles, backup_files_store
from backups.jobs.reaper import backup_fail, clinic_heal
from backups.files.archive import TarMember, tar_members, tar_size, tar_stream
from backups.files.list import backup_objects, file_list_check, file_list_store, partial_objects_remove
from backups.storage.objects import backup_storage, killable, storage_copy, storage_open, storage_sealing
from bitacora.models import Outcome
from bitacora.services import AuditContext, audit_failure, record
from core.errors import OperationInProgressError
from core.exceptions import DomainError
from core.faults import kill_point
from core.files import file_name_timestamp, temporary_file
from core.locks import tenant_operation_lock

logger = logging.getLogger(__name__)

MANIFEST_FORMAT_VERSION = 1
TARGET_TYPE = "backup"


def pg_binaries() -> PgBinaries:
    """pg_dump/psql matching the server's major version, or a clear error before any work."""
    return _binaries_for(connection.pg_version // 10000, settings.PG_BIN_DIR)


@functools.lru_cache(maxsize=8)
def _binaries_for(server_major: int, configured_dir: str) -> PgBinaries:
    # Found once per process: asking every pg_dump for its version costs a process per
    # backup, which a worker running thousands of nightly jobs would pay each time.
    # A failure is not cached (lru_cache keeps only results): installing the right
    # client fixes the next job without a restart.
    return find_binaries(server_major=server_major, configured_dir=configured_dir)


def database_params() -> PgConnectionParams:
    return PgConnectionParams.from_settings(connection.settings_dict)


def _server_version() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def _dump_timezone() -> str:
    """The time zone a fresh session gets (the dump's, by pg_dump or by cached.SESSION_SETTINGS):
    timestamptz rows are written in it, and a drill reads them back in it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'")
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


def backup_start(*, context: AuditContext, backup_type: str = BackupRecord.Type.MANUAL, created_by=None) -> BackupRecord:
    """Reserve a backup: a `pending` record with its file name, once the clinic is free (else 409)."""
    schema = connection.schema_name
    with audit_failure(context=context, action=BackupAction.CREATE), backup_failure_alerted():
        pg_binaries()  # a missing or mismatched pg_dump is refused before anything is recorded
        backup_storage().sealing_check()  # and so is a storage that must seal without the platform's keys
        clinic_heal(schema)
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


def _backup_dump(schema: str, binaries: PgBinaries, server_version: str, spool, listing, progress) -> tuple[DumpResult, dict]:
    """The dump and the file list from one snapshot: from the cached structure when the clinic
    matches it (backups.dump.cached), else pg_dump. What it used, and why, goes in the manifest."""
    params = database_params()
    reference = reference_get(binaries=binaries, params=params, server_version=server_version)
    reason = "no_reference"
    if reference is not None:
        try:
            with clinic_snapshot(schema, reference) as clinic:
                reason = clinic.mismatch
                if not reason:
                    with clinic.session.cursor(name="backup_file_paths") as cursor:
                        paths_write(cursor, schema, listing)
                    kill_point("backup.snapshot_taken")
                    migrations = clinic.migration_state()
                    result = clinic_dump_write(clinic, reference, spool, progress)
                    return result, {"method": "structure_cache", "migrations": migrations}
        except SnapshotUnstable:
            reason = "snapshot_unstable"
    # The file list and the dump from one snapshot (backups.files' map, step 1). The
    # snapshot's transaction is read-only and lives only as long as pg_dump does.
    # It locks nothing beforehand: pg_dump, which locks each table, must never queue
    # behind a migration that itself waits for this session.
    with exported_snapshot() as (snapshot, session):
        with session.cursor(name="backup_file_paths") as cursor:  # server-side: any number of paths
            paths_write(cursor, schema, listing)
        kill_point("backup.snapshot_taken")
        migrations = snapshot_migration_state(session, schema)
        result = dump_schema(binaries=binaries, params=params, schema=schema, destination=spool,
                             progress=progress, snapshot=snapshot)
    return result, {"method": "pg_dump", "reason": reason, "migrations": migrations}


def _backup_dump_and_store(backup: BackupRecord, binaries: PgBinaries) -> tuple[DumpResult, StoredFiles, dict, dict[str, float]]:
    # The manifest (backup_run) already holds the server version read once for this backup.
    schema = connection.schema_name

    def progress(size: int) -> None:
        BackupRecord.objects.filter(pk=backup.pk).update(progress_bytes=size)

    started = time.monotonic()
    with temporary_file() as spool, temporary_file() as listing:
        result, dumped_with = _backup_dump(schema, binaries, backup.manifest["server_version"], spool, listing,
                                           progress)
        dumped = time.monotonic()
        spool.seek(0)
        kill_point("backup.before_upload")
        backup_storage().save(backup.file_path, File(killable(spool, "backup.upload"), name=backup.file_name))
        uploaded = time.monotonic()
        kill_point("backup.before_files")
        files = backup_files_store(backup=backup, schema=schema, paths=paths_read(listing))
    seconds = {"dump": round(dumped - started, 3), "upload": round(uploaded - dumped, 3),
               "files": round(time.monotonic() - uploaded, 3)}
    return result, files, dumped_with, seconds


def _table_checksums(result: DumpResult) -> dict:
    """Each table's rows as the dump wrote them (backups.dump.tables): what a restore drill compares."""
    return {"algorithm": TABLE_CHECKSUM_ALGORITHM, "timezone": _dump_timezone(), "tables": result.tables}


def _backup_complete(backup: BackupRecord, result: DumpResult, files: StoredFiles, manifest: dict) -> None:
    backup.file_size, backup.sha256 = result.size, result.sha256
    backup.sql_size, backup.sql_sha256 = result.sql_size, result.sql_sha256
    backup.files_count, backup.files_size = files.count, files.size
    backup.manifest = manifest
    backup.warnings = files.warnings(connection.schema_name)
    backup.progress_bytes = result.size
    backup.status = BackupRecord.Status.COMPLETED
    backup.finished_at = timezone.now()
    backup.save(update_fields=["file_size", "sha256", "sql_size", "sql_sha256", "files_count", "files_size",
                               "manifest", "warnings", "progress_bytes", "status", "finished_at"])


def _retry_coming(retry_transient: bool):
    """A storage outage about to be retried is no failure yet (nothing to alert): the retry that gives up is."""
    return lambda error: retry_transient and isinstance(error, StorageUnavailableError)


def backup_run(*, context: AuditContext, backup_id: int, retry_transient: bool = False) -> BackupRecord:
    """Dump a reserved backup (pg_dump → gzip → sha256 → storage) and record it.

    Memory stays bounded: the dump streams through an anonymous temporary file. The
    record is `completed` only once the dump and its file list are stored and their
    checksums recorded; on any failure both are removed and the record is `failed`
    with the reason.
    With retry_transient, a storage outage puts the record back to `pending` and
    re-raises, for the job to try again later.
    """
    schema = connection.schema_name
    with (audit_failure(context=context, action=BackupAction.CREATE, target_type=TARGET_TYPE, target_id=backup_id),
          backup_failure_alerted(unless=_retry_coming(retry_transient))):
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
            }
            backup.save(update_fields=["manifest"])
            try:
                sealing = storage_sealing(schema)
                result, files, dumped_with, seconds = _backup_dump_and_store(backup, binaries)
                listed = file_list_store(backup=backup, schema=schema, dump=result)
            except StorageUnavailableError as exc:
                if not retry_transient:
                    backup_fail(backup=backup, error=exc)
                    raise
                partial_objects_remove(backup.file_path)
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
            # The migrations as of the dump's own snapshot: a migration applied meanwhile is not in it.
            _backup_complete(backup, result, files, {**backup.manifest, "migrations": dumped_with.pop("migrations"),
                                                     "dump": dumped_with, "files": {**files.as_manifest(schema), "list": listed},
                                                     "seconds": seconds, "table_checksums": _table_checksums(result),
                                                     **({"encryption": sealing} if sealing else {})})
    audit_file_warnings(context=context, backup=backup, operation="backup", missing=files.missing, warnings=backup.warnings)
    backup_completed_alerts(backup)
    record(context=context, action=BackupAction.CREATE, target_type=TARGET_TYPE, target_id=backup.pk,
           details={"file_name": backup.file_name, "file_size": backup.file_size, "backup_type": backup.backup_type,
                    "files_count": files.count, "files_uploaded": files.uploaded})
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
    """Delete the stored objects, then the record (an object already gone still deletes the record).

    The file objects that go are those no other backup of the clinic names. Under the
    clinic's lock: a backup running meanwhile could otherwise count on an object
    (named by this record a moment ago) that is deleted under it.
    """
    schema = connection.schema_name
    with audit_failure(context=context, action=BackupAction.DELETE, target_type=TARGET_TYPE, target_id=backup_id):
        backup = backup_get(backup_id=backup_id)
        if backup.status == BackupRecord.Status.RUNNING:
            raise BackupNotCompletedError(details={"id": backup.pk, "status": backup.status})
        with tenant_operation_lock(schema):
            storage = backup_storage()
            orphaned = file_objects_only_named_by(backup=backup)
            for sha256 in orphaned:
                try:
                    storage.delete(file_object_key(schema, sha256))
                except DomainError as exc:
                    raise BackupFileError(details={"operation": "delete", "object": file_object_key(schema, sha256),
                                                   "code": exc.code}) from exc
            for name in backup_objects(backup.file_path):  # its dump, then its file list
                storage.delete(name)
            backup.delete()
    record(context=context, action=BackupAction.DELETE, target_type=TARGET_TYPE, target_id=backup_id,
           details={"file_name": backup.file_name, "file_objects_deleted": len(orphaned)})


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
    """Re-read the stored dump, its file list and every file object it names, compare each sha256; mark and audit the result."""
    try:
        actual = storage_copy(backup.file_path).sha256
        integrity = BackupRecord.Integrity.OK if actual == backup.sha256 else BackupRecord.Integrity.MISMATCH
    except StorageObjectMissingError:
        actual, integrity = "", BackupRecord.Integrity.MISSING
    except BackupChecksumMismatchError:  # a sealed object that fails authentication: never read as anything
        actual, integrity = "", BackupRecord.Integrity.MISMATCH
    file_problems = file_list_check(backup=backup) + backup_files_check(backup=backup, schema=connection.schema_name)
    if integrity == BackupRecord.Integrity.OK and file_problems:
        problems = {problem["problem"] for problem in file_problems}
        integrity = BackupRecord.Integrity.MISSING if BackupRecord.Integrity.MISSING in problems else BackupRecord.Integrity.MISMATCH
    backup_mark_integrity(backup=backup, integrity=integrity)
    record(
        context=context,
        action=BackupAction.VERIFY,
        outcome=Outcome.OK if integrity == BackupRecord.Integrity.OK else Outcome.ERROR,
        target_type=TARGET_TYPE,
        target_id=backup.pk,
        details={"integrity": integrity, "expected_sha256": backup.sha256, "actual_sha256": actual,
                 "files_checked": backup.files_count, "files_bad": len(file_problems), "file_problems": file_problems[:MISSING_LISTED]},
    )
    return integrity


def backup_files_archive(*, context: AuditContext, backup_id: int) -> tuple[BackupRecord, int, Iterator[bytes]]:
    """A completed backup's files as one tar archive: its exact size, and its bytes as they are read.

    The archive is produced while it is sent; a file object found missing or damaged
    on the way ends it with an error, audited with the backup.
    """
    schema = connection.schema_name
    with audit_failure(context=context, action=BackupAction.DOWNLOAD_FILES, target_type=TARGET_TYPE, target_id=backup_id):
        backup = backup_get_completed(backup_id=backup_id)
        members = tar_members(backup=backup)
    record(context=context, action=BackupAction.DOWNLOAD_FILES, target_type=TARGET_TYPE, target_id=backup.pk,
           details={"file_name": backup.file_name, "files": len(members)})

    def open_member(member: TarMember) -> BinaryIO:
        return storage_open(file_object_key(schema, member.sha256))

    def chunks() -> Iterator[bytes]:
        with audit_failure(context=context, action=BackupAction.FILES, target_type=TARGET_TYPE, target_id=backup.pk,
                           details={"operation": "download", "file_name": backup.file_name}):
            yield from tar_stream(members, open_member)

    return backup, tar_size(members), chunks()
