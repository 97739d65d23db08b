"""What every file phase shares: which fields hold files, where the media storage is, how a
content's object is named, the paths a clinic's rows name in one snapshot, and the bounded
spool a file's content passes through (the phases themselves are mapped in backups.files)."""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from typing import IO, Any, Iterable, Iterator

import psycopg2.extensions
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import connection, models

from backup_restore.classification import tenant_models
from backups.actions import BackupAction
from backups.errors import BackupChecksumMismatchError, StorageObjectMissingError
from backups.models import BackupFile, BackupRecord
from backups.storage.objects import COPY_CHUNK_SIZE, copy_hashed, storage_open
from bitacora.models import Outcome
from bitacora.services import AuditContext, record
from core.files import TEMP_PREFIX, temp_dir

BATCH_SIZE = 500
# Files up to this size are spooled in memory, larger ones in an anonymous temporary
# file: memory stays bounded whatever the size of a radiograph.
SPOOL_MAX_BYTES = 4 * 1024 * 1024
MISSING_LISTED = 20  # how many missing paths an audit entry names (the count is always there)
ROWS_LISTED = 20  # how many rows holding a refused name a warning names (the count is always there)


def media_storage() -> Storage:
    """Where the clinic's files live: Django's default storage."""
    return storages["default"]


def media_stat(media: Storage, path: str) -> tuple[int, datetime | None]:
    """A media file's size and modification time (None where the backend keeps none): in one request
    where the backend answers both at once (SupabaseStorage.size_and_modified_time), else through
    Django's size() and get_modified_time()."""
    both = getattr(media, "size_and_modified_time", None)
    if callable(both):
        return both(path)
    size = media.size(path)
    try:
        return size, media.get_modified_time(path)
    except NotImplementedError:
        return size, None  # no quick check on this backend: every file is read and hashed


def file_fields() -> list[tuple[type[models.Model], models.FileField]]:
    """Every FileField (ImageField included) of the tenant apps' models, present or future."""
    return [
        (model, model_field)
        for model in tenant_models()
        for model_field in model._meta.local_concrete_fields
        if isinstance(model_field, models.FileField)
    ]


def file_name_max_length() -> int:
    """The longest name a file field of the tenant apps can hold (core.media_names bounds names by it)."""
    return max((model_field.max_length or 100 for _model, model_field in file_fields()), default=100)


def file_warnings(schema: str, *, refused: list[tuple[str, str]], missing: list[str]) -> list[dict]:
    """A record's warnings (backups.models.WARNING_MESSAGES) for a file phase: the refused names
    counted by reason, with the rows that hold them (never the names: they may be a patient's,
    or hostile), and the missing files counted."""
    found: list[dict] = []
    if refused:
        found.append({"code": "files_refused", "count": len(refused),
                      "reasons": dict(Counter(reason for _path, reason in refused)),
                      "rows": _rows_naming(schema, sorted({path for path, _reason in refused}))})
    if missing:
        found.append({"code": "files_missing", "count": len(missing)})
    return found


def audit_file_warnings(
    *, context: AuditContext, backup: BackupRecord, operation: str, missing: list[str], warnings: list[dict] = ()
) -> None:
    """One error entry for the files the rows name but the media storage (or the backup) lacks,
    and one for the names refused (the rows that hold them, never the names)."""
    if missing:
        record(context=context, action=BackupAction.FILES, outcome=Outcome.ERROR, target_type="backup", target_id=backup.pk,
               details={"operation": operation, "code": "file_missing", "missing": len(missing),
                        "paths": missing[:MISSING_LISTED], "file_name": backup.file_name})
    for warning in warnings:
        if warning["code"] == "files_refused":
            record(context=context, action=BackupAction.FILES, outcome=Outcome.ERROR, target_type="backup",
                   target_id=backup.pk, details={"operation": operation, "code": "file_refused", "refused": warning["count"],
                                                 "reasons": warning["reasons"], "rows": warning["rows"],
                                                 "file_name": backup.file_name})



def _rows_naming(schema: str, paths: list[str]) -> list[dict]:
    """Which rows (model, pk, field) name these paths, at most ROWS_LISTED: where a clinic admin fixes them."""
    rows: list[dict] = []
    with connection.cursor() as cursor:
        for model, model_field in file_fields():
            cursor.execute(
                f'SELECT "{model._meta.pk.column}" FROM "{schema}"."{model._meta.db_table}" '
                f'WHERE "{model_field.column}" = ANY(%s) ORDER BY 1 LIMIT %s', [paths, ROWS_LISTED - len(rows)],
            )
            rows += [{"model": model._meta.label_lower, "pk": pk, "field": model_field.name} for (pk,) in cursor.fetchall()]
            if len(rows) >= ROWS_LISTED:
                break
    return rows


def file_object_key(schema: str, sha256: str) -> str:
    """The backups-storage name of one content of one clinic."""
    return f"{schema}/files/{sha256[:2]}/{sha256}"


@contextmanager
def spool() -> Iterator[IO[bytes]]:
    """A bounded in-memory buffer that turns into an anonymous temporary file when it grows."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES, dir=temp_dir(), prefix=TEMP_PREFIX) as buffer:
        yield buffer


# The file list, from one snapshot or from a staging schema


def _paths_query(schema: str) -> str | None:
    selects = [
        f'SELECT "{model_field.column}" AS path FROM "{schema}"."{model._meta.db_table}" '
        f"WHERE \"{model_field.column}\" <> ''"
        for model, model_field in file_fields()
    ]
    # DISTINCT: a path several rows (or fields) name is one file.
    return f"SELECT DISTINCT path FROM ({' UNION ALL '.join(selects)}) AS named ORDER BY path" if selects else None


def paths_write(cursor, schema: str, destination: IO[bytes]) -> int:
    """Write every path the schema's rows name to destination, one JSON string a line; return how many."""
    query = _paths_query(schema)
    count = 0
    if query is not None:
        cursor.execute(query)
        while rows := cursor.fetchmany(BATCH_SIZE):
            for (path,) in rows:
                destination.write(json.dumps(path).encode() + b"\n")
                count += 1
    destination.flush()
    destination.seek(0)
    return count


def paths_read(source: IO[bytes]) -> Iterator[str]:
    for line in source:
        yield json.loads(line)


def batched(items: Iterable[str], size: int = BATCH_SIZE) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@contextmanager
def exported_snapshot() -> Iterator[tuple[str, Any]]:
    """A read-only REPEATABLE READ transaction on a session of its own, and its exported snapshot.

    pg_dump --snapshot=<id> sees exactly what this transaction sees as long as it
    stays open; the caller reads the file list on the cursor's connection meanwhile.
    """
    session = connection.copy()
    try:
        session.ensure_connection()
        raw = session.connection
        raw.autocommit = False
        raw.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with raw.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot()")
            (snapshot_id,) = cursor.fetchone()
        yield snapshot_id, raw
    finally:
        session.close()  # ends the transaction; the snapshot can no longer be imported


def stored_content(source: IO[bytes], name: str, size: int) -> File:
    """source as a Django File of a known size, copied by storages in large chunks (not 64 KiB).

    A spool in memory (at most SPOOL_MAX_BYTES) is one chunk: BytesIO hands over its
    whole buffer without copying it, where 1 MiB reads would copy every byte once more.
    """
    content = File(source, name=name)
    content.size = size
    content.DEFAULT_CHUNK_SIZE = max(COPY_CHUNK_SIZE, min(size, SPOOL_MAX_BYTES))
    return content


# Verify


def backup_files_check(*, backup: BackupRecord, schema: str) -> list[dict]:
    """Re-read every file object the backup names; the ones missing or not matching their sha256."""
    problems = []
    objects = backup.files.exclude(sha256="").values_list("sha256", flat=True).distinct().order_by("sha256")
    for sha256 in objects.iterator():
        key = file_object_key(schema, sha256)
        try:
            with storage_open(key) as stored:
                actual = copy_hashed(stored).sha256
        except StorageObjectMissingError:
            problems.append({"object": key, "problem": BackupRecord.Integrity.MISSING.value})
            continue
        except BackupChecksumMismatchError:  # sealed, and failing authentication
            problems.append({"object": key, "problem": BackupRecord.Integrity.MISMATCH.value})
            continue
        if actual != sha256:
            problems.append({"object": key, "problem": BackupRecord.Integrity.MISMATCH.value, "actual_sha256": actual})
    return problems


# Retention


def file_objects_only_named_by(*, backup: BackupRecord) -> list[str]:
    """The sha256 of every object this backup names and no other backup of the clinic does."""
    named_elsewhere = BackupFile.objects.exclude(backup_id=backup.pk).exclude(sha256="").values("sha256")
    return list(
        backup.files.exclude(sha256="").exclude(sha256__in=named_elsewhere)
        .values_list("sha256", flat=True).distinct().order_by("sha256")
    )
