"""Patient files (every FileField of the tenant apps) inside a clinic's SQL backups.

Backup, after the dump (backups.services.backup_run):
1. The file list is read in the dump's own snapshot: one REPEATABLE READ session
   exports its snapshot, lists every path the clinic's rows name, and pg_dump runs
   with `--snapshot` while that session stays open. A file added or deleted during
   the backup is in both the dump and the list, or in neither.
2. Each file is read once from the media storage (STORAGES["default"]) into a
   bounded spool while hashed; its entry (path, sha256, size, modification time) is
   written before its object, so a backup killed mid-way still names every object
   it may have stored and retention can remove them with its record.
3. The content goes to the backups storage once per clinic, named by its sha256
   (`<clinic>/files/<ab>/<sha256>`): an object a completed backup names is there;
   any other one is checked by size (a killed upload may have left part of one) and
   uploaded when absent. A file whose size and modification time match its entry in
   an earlier completed backup is not read again: a nightly backup reads and uploads
   only new files.
4. A file the rows name but the media storage lacks is recorded as missing (a blank
   sha256) and audited; the backup still completes, since its SQL is still good.

Restore, before the schema swap (backups.files_restore; the write order is in backups.restore's map):
every path the staging rows name gets a media file with its backup-time content, by
creating files only, never by overwriting or deleting one. A path that holds the
same bytes is left as it is; a free path is written; a path holding other bytes is
left alone and the content goes to a new name that the staging rows are rewritten
to. The media storage must not overwrite on save (FileSystemStorage never does;
django-storages' S3 needs AWS_S3_FILE_OVERWRITE = False).
The archive of a backup's files is backups.files_archive; the list of them stored beside the
dump, readable without the database, is backups.files_list.
"""
from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import IO, Any, Iterable, Iterator

import psycopg2.extensions
from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import connection, models

from backup_restore.classification import tenant_models
from backups.errors import BackupFileError, StorageObjectMissingError
from backups.models import BackupFile, BackupRecord
from backups.storage import COPY_CHUNK_SIZE, StoredCopy, backup_storage, copy_hashed, killable, storage_open
from core.faults import kill_point
from core.files import TEMP_PREFIX, temp_dir

BATCH_SIZE = 500
# Files up to this size are spooled in memory, larger ones in an anonymous temporary
# file: memory stays bounded whatever the size of a radiograph.
SPOOL_MAX_BYTES = 4 * 1024 * 1024
MISSING_LISTED = 20  # how many missing paths an audit entry names (the count is always there)


def media_storage() -> Storage:
    """Where the clinic's files live: Django's default storage."""
    return storages["default"]


def file_fields() -> list[tuple[type[models.Model], models.FileField]]:
    """Every FileField (ImageField included) of the tenant apps' models, present or future."""
    return [
        (model, model_field)
        for model in tenant_models()
        for model_field in model._meta.local_concrete_fields
        if isinstance(model_field, models.FileField)
    ]


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


# Backup: read, hash, store once


@dataclass
class StoredFiles:
    """What a backup's file phase did."""

    count: int = 0
    size: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    missing: list[str] = field(default_factory=list)

    def as_manifest(self, schema: str) -> dict:
        return {"count": self.count, "size": self.size, "missing": len(self.missing), "uploaded": self.uploaded,
                "uploaded_bytes": self.uploaded_bytes, "storage_prefix": f"{schema}/files/", "hash": "sha256"}


def _media_stat(media: Storage, path: str) -> tuple[int, datetime | None]:
    size = media.size(path)
    try:
        modified_at = media.get_modified_time(path)
    except NotImplementedError:
        modified_at = None  # no quick check on this backend: every file is read and hashed
    return size, modified_at


def _read_whole(media: Storage, path: str) -> tuple[StoredCopy, IO[bytes]]:
    """A media file read once and hashed, and its bytes to store from: in memory up to
    SPOOL_MAX_BYTES (one read, no copy), else in an anonymous temporary file (the caller closes it)."""
    try:
        with media.open(path, "rb") as media_file:
            data = media_file.read(SPOOL_MAX_BYTES + 1)
            digest, size = hashlib.sha256(data), len(data)
            if size <= SPOOL_MAX_BYTES:
                return StoredCopy(sha256=digest.hexdigest(), size=size), io.BytesIO(data)
            buffer = tempfile.TemporaryFile(dir=temp_dir(), prefix=TEMP_PREFIX)
            try:
                buffer.write(data)
                del data
                while chunk := media_file.read(COPY_CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
                    buffer.write(chunk)
                buffer.seek(0)
            except BaseException:
                buffer.close()
                raise
            return StoredCopy(sha256=digest.hexdigest(), size=size), buffer
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BackupFileError(details={"operation": "read", "path": path, "error": type(exc).__name__}) from exc


def _insert_entries(cursor, schema: str, entries: list[BackupFile]) -> None:
    """Write entries at once, in one INSERT on one cursor (the ORM's bulk_create, and a new
    cursor, which django-tenants opens with its own SET search_path, cost more than the row)."""
    if not entries:
        return
    columns = ("backup_id", "path", "sha256", "size", "modified_at")
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(entries))
    params = [getattr(entry, column) for entry in entries for column in columns]
    cursor.execute(f'INSERT INTO "{schema}"."{BackupFile._meta.db_table}" ({", ".join(columns)}) VALUES {values}', params)


def _trusted_backups(store: Storage) -> list[int]:
    """Completed backups whose objects this storage holds: those whose dump it holds.

    A completed backup stored every object it names, but perhaps in a storage that is
    no longer configured (local disk before Supabase): its dump tells, in one request.
    """
    completed = BackupRecord.objects.filter(status=BackupRecord.Status.COMPLETED).values_list("pk", "file_path")
    return [pk for pk, file_path in completed if store.exists(file_path)]


def _previous_entries(paths: list[str], trusted: list[int]) -> dict[str, BackupFile]:
    """The newest entry of each path in a trusted backup (its object is known to be stored)."""
    entries = (
        BackupFile.objects.filter(path__in=paths, backup_id__in=trusted)
        .exclude(sha256="")
        .order_by("path", "-backup_id")
        .distinct("path")
    )
    return {entry.path: entry for entry in entries}


def _object_stored(store: Storage, key: str, copied: StoredCopy, trusted: list[int]) -> bool:
    if trusted and BackupFile.objects.filter(sha256=copied.sha256, backup_id__in=trusted).exists():
        return True  # a completed backup names it: retention keeps it while that backup exists
    if not store.exists(key):
        return False
    if store.size(key) == copied.size:
        return True  # stored by a backup that failed afterwards; content-addressed, so the same bytes
    store.delete(key)  # part of an upload that was killed
    return False


def stored_content(source: IO[bytes], name: str, size: int) -> File:
    """source as a Django File of a known size, copied by storages in large chunks (not 64 KiB)."""
    content = File(source, name=name)
    content.size = size
    content.DEFAULT_CHUNK_SIZE = COPY_CHUNK_SIZE
    return content


def _upload(store: Storage, key: str, source: IO[bytes], copied: StoredCopy) -> None:
    content = stored_content(killable(source, "backup.files.upload"), posixpath.basename(key), copied.size)
    name = store.save(key, content)
    if name != key:  # the storage renamed it: someone else wrote that name meanwhile
        store.delete(name)
        raise BackupFileError(details={"operation": "upload", "object": key})


@contextmanager
def _asynchronous_commits() -> Iterator[None]:
    """Commits that do not wait for the WAL flush, for this session, for a while.

    Each entry commits on its own before its object is stored: visible at once to
    anyone, and kept if this process dies. Only a crash of the database server
    itself could lose the last few, leaving objects no record names (space, never
    data). Waiting for a flush per file would cost more than hashing it.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def backup_files_store(*, backup: BackupRecord, schema: str, paths: Iterable[str]) -> StoredFiles:
    """Store the content of every path (from the dump's snapshot) once, and list it on the backup."""
    with _asynchronous_commits(), connection.cursor() as cursor:
        return _store_files(cursor, backup=backup, schema=schema, paths=paths)


def _store_files(cursor, *, backup: BackupRecord, schema: str, paths: Iterable[str]) -> StoredFiles:
    media, store = media_storage(), backup_storage()
    result = StoredFiles()
    stored_now: set[str] = set()
    trusted = _trusted_backups(store)
    for batch in batched(paths):
        previous = _previous_entries(batch, trusted)
        pending: list[BackupFile] = []
        for path in batch:
            try:
                size, modified_at = _media_stat(media, path)
                known = previous.get(path)
                if known is not None and modified_at is not None and (known.size, known.modified_at) == (size, modified_at):
                    pending.append(BackupFile(backup=backup, path=path, sha256=known.sha256, size=size, modified_at=modified_at))
                    result.count, result.size = result.count + 1, result.size + size
                    continue
                copied, buffer = _read_whole(media, path)
                with buffer:
                    pending.append(BackupFile(backup=backup, path=path, sha256=copied.sha256, size=copied.size,
                                              modified_at=modified_at))
                    # The entry before the object: whatever this backup may have stored, its record names.
                    _insert_entries(cursor, schema, pending)
                    pending = []
                    key = file_object_key(schema, copied.sha256)
                    if copied.sha256 not in stored_now and not _object_stored(store, key, copied, trusted):
                        buffer.seek(0)
                        _upload(store, key, buffer, copied)
                        result.uploaded, result.uploaded_bytes = result.uploaded + 1, result.uploaded_bytes + copied.size
                    stored_now.add(copied.sha256)
                    result.count, result.size = result.count + 1, result.size + copied.size
            except FileNotFoundError:
                pending.append(BackupFile(backup=backup, path=path))
                result.missing.append(path)
        _insert_entries(cursor, schema, pending)
        kill_point("backup.files.batch_stored")
    return result


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
