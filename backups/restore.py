"""Restore a clinic from one of its SQL backups: replay into a staging schema, bring the files back, then swap.

1. Check before touching anything: the record is completed, the object exists and
   its sha256 matches, its migrations are not newer than the code.
2. Replay the dump in one `psql -v ON_ERROR_STOP=1` run, inside an explicit
   BEGIN … COMMIT written into the script itself. The dump hard-codes the schema
   name and editing its text corrupts data, so that run renames the live schema
   aside, replays the dump (which recreates the live name), renames the result to
   a staging name and the live schema back. If anything fails, or the script ends
   before its COMMIT because the process feeding it died, the whole run rolls back:
   the live schema was never touched. (`--single-transaction` would not do: psql
   commits what it was fed when its input simply ends.) A restore drill's replay does the
   same rename in its own transaction: the restore first stops any drill replay of the
   clinic (core.locks.drill_replays_stopped) rather than wait for it.
3. Migrate the staging schema forward if the dump is older than the code.
4. Files, all before the swap (backups.files.restore.restore_files). For every path the
   staging rows name, the media storage gets a file with that path's backup-time
   content (read from its content-addressed object, checked against its sha256):
   a. a path already holding those bytes (size, then sha256) is left as it is;
   b. a free path is created with them;
   c. a path holding other bytes is never written: the content is created under a
      new name beside it (its hash in the name), and the staging rows are rewritten
      to that name (an UPDATE of the staging schema only).
   Writes to the media storage only ever create files at names that held nothing,
   and nothing is deleted. So whatever happens up to the swap's commit (an error, a
   lock timeout, SIGKILL in the middle of a file), every file the live rows name is
   still there with its bytes, and the live rows are untouched (they are in another
   schema); what a dead restore wrote is new files nobody's rows name yet, or files
   at names that live rows named but whose file was gone. Once the swap commits,
   every file the restored rows name exists, since each was written before. Each name
   about to be created is recorded first (the job's RestoreFile rows); however the
   restore ends, it or the reaper deletes those no live row names (backups.files.cleanup).
5. In one short transaction with a lock timeout: lock the live tables, carry the rows
   that a restore must not roll back (backup history and its file lists, restore
   jobs, audit log) into staging, mark the job `swapped` there, swap the schemas.
   Other sessions see the old tenant or the new one, never a mix.
6. Drop the old schema. Files that only the old rows named stay in the media
   storage (a restore never deletes a file); they are left for a later clean-up.

A restore into a new clinic replays into a staging schema too, clears the backup
history it brought along (those backups, and their objects, are the source
clinic's), gives it its own copies of the files under `<new clinic>/…` by step 4
with every row rewritten, then renames the schema to the new clinic's name and
registers the clinic in one transaction. Every schema an operation creates is named
`<clinic>__<staging|aside|old>_<hex>` (core.schemas), so that if the process dies
at any step the reaper finds and drops it.

A restore drill (backups.drills) takes steps 1 to 3 on this same path (`replay_checks`,
`replay_into_staging`) into a scratch schema, `<clinic>__drill_<hex>`, and stops there.
"""
from __future__ import annotations

import logging
from typing import BinaryIO, Callable

from django.db import DatabaseError, connection, transaction

from backups.actions import BackupAction
from backups.errors import (
    BackupChecksumMismatchError,
    BackupNewerThanCodeError,
    RestoreConfirmationError,
    StorageObjectMissingError,
)
from backups.files.cleanup import created_files
from backups.files.restore import RestoredFiles, new_clinic_rename, restore_files
from backups.models import BACKUP_HISTORY_MODELS, BackupFile, BackupRecord, RestoreFile, RestoreJob
from backups.dump.replay import dump_replay
from backups.dump.swap import schema_swap
from backups.selectors import backup_get, backup_get_completed
from backups.files.media import audit_file_warnings
from backups.services import TARGET_TYPE, backup_mark_integrity, database_params, pg_binaries
from backups.storage.objects import storage_copy
from bitacora.models import Bitacora
from bitacora.services import AuditContext, audit_failure, record
from core.errors import RestoreBusyError, RestoreFailedError
from core.faults import kill_point
from core.files import temporary_file
from core.locks import drill_replay_guard_sql, drill_replays_stopped, tenant_operation_lock
from core.models import Tenant
from core.schemas import OperationSchemas, code_migrations, operation_schemas, schema_drop, schema_migrate
from core.services import tenant_name_check, tenant_register_schema
from core.selectors import migration_state

logger = logging.getLogger(__name__)

# Rows written after the dump that a restore must keep: who did what, which backups exist
# and which files each holds, and the restores themselves (the one running included, and the
# media names it recorded: after the swap they are cleaned up against the restored rows).
CARRIED_MODELS = (BackupRecord, BackupFile, RestoreJob, RestoreFile, Bitacora)


def _verified_copy(backup: BackupRecord, destination: BinaryIO) -> None:
    """Copy the stored object to a local file while hashing it; refuse a mismatch."""
    try:
        copied = storage_copy(backup.file_path, destination)
    except StorageObjectMissingError:
        backup_mark_integrity(backup=backup, integrity=BackupRecord.Integrity.MISSING)
        raise
    except BackupChecksumMismatchError:  # a sealed dump that fails authentication
        backup_mark_integrity(backup=backup, integrity=BackupRecord.Integrity.MISMATCH)
        raise
    destination.seek(0)
    if copied.sha256 != backup.sha256:
        backup_mark_integrity(backup=backup, integrity=BackupRecord.Integrity.MISMATCH)
        raise BackupChecksumMismatchError(details={"id": backup.pk, "expected": backup.sha256, "actual": copied.sha256})


def _check_migrations(backup: BackupRecord) -> bool:
    """Refuse a dump from a newer migration state; tell whether it is older than the code."""
    dumped = backup.manifest.get("migrations", {})
    known = code_migrations()
    unknown = sorted(f"{app}.{name}" for app, name in dumped.items() if (app, name) not in known)
    if unknown:
        raise BackupNewerThanCodeError(details={"unknown_migrations": unknown})
    return dumped != migration_state()


def replay_checks(backup: BackupRecord, dump_file: BinaryIO) -> bool:
    """Step 1's checks of the stored dump, copied into dump_file: its sha256 matches, its migrations
    are not newer than the code. Whether it is older (step 3 will migrate it forward)."""
    _verified_copy(backup, dump_file)
    return _check_migrations(backup)


def replay_into_staging(
    *, schema: str, names: OperationSchemas, dump_file: BinaryIO, older_than_code: bool, job: RestoreJob | None = None,
    replayed: Callable[[], None] | None = None, drill: bool = False,
) -> None:
    """Steps 2 and 3: the dump replayed into names.staging, which is then migrated forward if the
    dump is older than the code. Restores and restore drills (backups.drills) take this one path.

    `replayed` runs between the two (a drill compares the rows there, before a migration may
    rewrite them). A drill's replay gives way to a restore of the clinic (core.locks) and
    passes kill points of its own (`drill.replay…`).
    """
    kill_prefix = "drill" if drill else "restore"
    _job_phase(job, RestoreJob.Phase.REPLAY)
    dump_replay(binaries=pg_binaries(), params=database_params(), schema=schema, staging=names.staging, aside=names.aside,
                dump_file=dump_file, progress=_job_progress(job), guard_sql=drill_replay_guard_sql(schema) if drill else "",
                kill_name=f"{kill_prefix}.replay", error_codes=drill)
    kill_point(f"{kill_prefix}.after_replay")
    if replayed is not None:
        replayed()
    if older_than_code:
        _job_phase(job, RestoreJob.Phase.MIGRATE)
        schema_migrate(names.staging)


def _swap(*, schema: str, staging: str, old: str, job: RestoreJob | None) -> None:
    def mark_swapped(cursor) -> None:  # committed with the swap or not at all: the reaper reads it
        cursor.execute(f'UPDATE "{staging}"."{RestoreJob._meta.db_table}" SET phase = %s WHERE id = %s',
                       [RestoreJob.Phase.SWAPPED, job.pk])

    schema_swap(schema=schema, staging=staging, old=old, carried_tables=[model._meta.db_table for model in CARRIED_MODELS],
                before_swap=mark_swapped if job is not None else None)


def _job_phase(job: RestoreJob | None, phase: str, **fields) -> None:
    if job is not None:
        RestoreJob.objects.filter(pk=job.pk).update(phase=phase, **fields)


def _job_progress(job: RestoreJob | None) -> Callable[[int], None] | None:
    if job is None:
        return None
    return lambda count: RestoreJob.objects.filter(pk=job.pk).update(progress_bytes=count)


def backup_restore_in_place(*, context: AuditContext, backup_id: int, confirm: str, job: RestoreJob | None = None) -> BackupRecord:
    """Put this clinic back to the moment of one of its backups, atomically."""
    schema = connection.schema_name
    names = operation_schemas(schema)
    with audit_failure(context=context, action=BackupAction.RESTORE, target_type=TARGET_TYPE, target_id=backup_id):
        if confirm != schema:
            raise RestoreConfirmationError(details={"expected": schema})
        backup = backup_get_completed(backup_id=backup_id)
        pg_binaries()  # a missing or mismatched psql is refused before any work
        with tenant_operation_lock(schema), drill_replays_stopped(schema), temporary_file() as dump_file:
            _job_phase(job, RestoreJob.Phase.COPY)
            older_than_code = replay_checks(backup, dump_file)
            record(context=context, action=BackupAction.RESTORE_START, target_type=TARGET_TYPE, target_id=backup.pk,
                   details={"file_name": backup.file_name})
            kill_point("restore.before_replay")
            with created_files(job, [schema]) as created:
                try:
                    replay_into_staging(schema=schema, names=names, dump_file=dump_file, older_than_code=older_than_code, job=job)
                    _job_phase(job, RestoreJob.Phase.FILES)
                    files = restore_files(backup=backup, staging=names.staging, created=created)
                    warnings = files.warnings(names.staging)
                    _job_phase(job, RestoreJob.Phase.SWAP, warnings=warnings)
                    _swap(schema=schema, staging=names.staging, old=names.old, job=job)
                except DatabaseError as exc:
                    schema_drop(names.staging)
                    if "lock timeout" in str(exc):
                        raise RestoreBusyError() from exc
                    raise RestoreFailedError(details={"exception": type(exc).__name__}) from exc
                except Exception:
                    schema_drop(names.staging)
                    raise
                kill_point("restore.after_swap")
                schema_drop(names.old)
    backup = backup_get(backup_id=backup_id)
    audit_file_warnings(context=context, backup=backup, operation="restore", missing=files.missing, warnings=warnings)
    record(context=context, action=BackupAction.RESTORE, target_type=TARGET_TYPE, target_id=backup.pk,
           details={"file_name": backup.file_name, "migrated_forward": older_than_code, **_files_details(files)})
    return backup


def _files_details(files: RestoredFiles) -> dict:
    return {"files_checked": files.checked, "files_written": files.written, "files_renamed": files.renamed,
            "files_missing": len(files.missing), "files_refused": len(files.refused)}


def _clear_history(staging: str) -> None:
    with connection.cursor() as cursor:
        for model in BACKUP_HISTORY_MODELS:  # a dump made before they were left out holds some
            cursor.execute(f'DELETE FROM "{staging}"."{model._meta.db_table}"')


def backup_restore_as_new_tenant(
    *, context: AuditContext, backup_id: int, schema_name: str, nombre: str, job: RestoreJob | None = None
) -> Tenant:
    """A new clinic holding this clinic's data as of one backup; the live clinic is not touched.

    Clinics use it to look at an old state. The replay is the one of an in-place
    restore into a staging schema; that schema then becomes the new clinic's, in the
    same transaction that registers the clinic.
    """
    schema = connection.schema_name
    names = operation_schemas(schema)
    with audit_failure(context=context, action=BackupAction.RESTORE_AS_NEW_TENANT, target_type=TARGET_TYPE, target_id=backup_id,
                       details={"new_tenant": schema_name}):
        tenant_name_check(schema_name)
        backup = backup_get_completed(backup_id=backup_id)
        pg_binaries()  # a missing or mismatched psql is refused before any work
        # The new name's lock too: a restore into the same name from another clinic would write the same
        # files, and the reaper cleaning up after this one must not delete that one's (backups.files.cleanup).
        with (tenant_operation_lock(schema), tenant_operation_lock(schema_name), drill_replays_stopped(schema),
              temporary_file() as dump_file):
            _job_phase(job, RestoreJob.Phase.COPY)
            older_than_code = replay_checks(backup, dump_file)
            # The new clinic's files are seen by its rows once it is registered (the clean-up counts them then).
            with created_files(job, [schema, schema_name]) as created:
                try:
                    replay_into_staging(schema=schema, names=names, dump_file=dump_file, older_than_code=older_than_code, job=job)
                    _clear_history(names.staging)
                    _job_phase(job, RestoreJob.Phase.FILES)
                    files = restore_files(backup=backup, staging=names.staging, rename=new_clinic_rename(schema, schema_name),
                                          target_schema=schema_name, created=created)
                    with transaction.atomic():
                        with connection.cursor() as cursor:
                            cursor.execute(f'ALTER SCHEMA "{names.staging}" RENAME TO "{schema_name}"')
                        tenant = tenant_register_schema(schema_name=schema_name, nombre=nombre)
                except Exception:
                    schema_drop(names.staging)
                    raise
    warnings = files.warnings(schema_name)
    if job is not None:
        RestoreJob.objects.filter(pk=job.pk).update(warnings=warnings)
    audit_file_warnings(context=context, backup=backup, operation="restore", missing=files.missing, warnings=warnings)
    record(context=context, action=BackupAction.RESTORE_AS_NEW_TENANT, target_type=TARGET_TYPE, target_id=backup.pk,
           details={"file_name": backup.file_name, "new_tenant": schema_name, "migrated_forward": older_than_code,
                    **_files_details(files)})
    return tenant
