"""A backup's file phase: every file its snapshot's rows name read, hashed and stored once
(steps 2 to 4 of backups.files' map)."""
from __future__ import annotations

import hashlib
import io
import posixpath
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Iterable, Iterator

from django.conf import settings
from django.core.files.storage import Storage
from django.db import connection

from backups.errors import BackupFileError
from backups.files.threads import FileThreads, InOrder
from backups.files.media import (
    SPOOL_MAX_BYTES,
    batched,
    file_name_max_length,
    file_object_key,
    file_warnings,
    media_stat,
    media_storage,
    stored_content,
)
from backups.models import BackupFile, BackupRecord
from backups.storage.objects import COPY_CHUNK_SIZE, StoredCopy, backup_storage, killable, storage_save_exactly
from core.faults import kill_point
from core.files import temporary_file
from core.media_names import media_file_refusal


@dataclass
class StoredFiles:
    """What a backup's file phase did."""

    count: int = 0
    size: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    missing: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): never read

    def warnings(self, schema: str) -> list[dict]:
        return file_warnings(schema, refused=self.refused, missing=self.missing)

    def as_manifest(self, schema: str) -> dict:
        return {"count": self.count, "size": self.size, "missing": len(self.missing), "refused": len(self.refused),
                "uploaded": self.uploaded,
                "uploaded_bytes": self.uploaded_bytes, "storage_prefix": f"{schema}/files/", "hash": "sha256"}


def _read_whole(media: Storage, path: str) -> tuple[StoredCopy, IO[bytes]]:
    """A media file read once and hashed, and its bytes to store from: in memory up to
    SPOOL_MAX_BYTES (one read, no copy), else in an anonymous temporary file (the caller closes it)."""
    try:
        with media.open(path, "rb") as media_file:
            data = media_file.read(SPOOL_MAX_BYTES + 1)
            digest, size = hashlib.sha256(data), len(data)
            if size <= SPOOL_MAX_BYTES:
                return StoredCopy(sha256=digest.hexdigest(), size=size), io.BytesIO(data)
            buffer = temporary_file()
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
        # No path in the error, nor in its traceback: a file's name may be a patient's.
        raise BackupFileError(details={"operation": "read", "error": type(exc).__name__}) from None


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


def _named_by_trusted(hashes: set[str], trusted: list[int]) -> set[str]:
    """Which of these contents a trusted backup names: stored, and kept by retention while it exists."""
    if not hashes or not trusted:
        return set()
    return set(BackupFile.objects.filter(sha256__in=hashes, backup_id__in=trusted).values_list("sha256", flat=True).distinct())


@dataclass
class _Examined:
    """One path as a worker found it: missing (no sha256), unchanged since a trusted backup
    (no buffer: not read again), or read and hashed (its bytes in buffer)."""

    path: str
    size: int = 0
    sha256: str = ""
    modified_at: datetime | None = None
    buffer: IO[bytes] | None = None
    refused: str = ""

    def entry(self, backup: BackupRecord) -> BackupFile:
        return BackupFile(backup=backup, path=self.path, sha256=self.sha256, size=self.size, modified_at=self.modified_at)


def _examine(media: Storage, schema: str, max_length: int, path: str, known: BackupFile | None) -> _Examined:
    """On a worker thread: a media file's size and time, and its content's hash unless a trusted
    backup's entry already has them (a nightly backup reads only new files). A name outside the
    clinic's folder (core.media_names) is refused without being read."""
    if refusal := media_file_refusal(media, schema, path, max_length=max_length):
        return _Examined(path, refused=refusal)
    try:
        size, modified_at = media_stat(media, path)
        if known is not None and modified_at is not None and (known.size, known.modified_at) == (size, modified_at):
            return _Examined(path, size, known.sha256, modified_at)
        copied, buffer = _read_whole(media, path)
    except FileNotFoundError:  # deleted since it was listed: the dump's rows still name it
        return _Examined(path)
    return _Examined(path, copied.size, copied.sha256, modified_at, buffer)


def _upload(store: Storage, key: str, read: _Examined) -> int:
    """On a worker thread: store one content from its spool (closed afterwards) unless it is
    there already; the bytes uploaded."""
    with read.buffer as source:
        if store.exists(key):
            if store.size(key) == read.size:
                return 0  # stored by a backup that failed afterwards; content-addressed, so the same bytes
            store.delete(key)  # part of an upload that was killed
        source.seek(0)
        storage_save_exactly(store, key, stored_content(killable(source, "backup.files.upload"), posixpath.basename(key),
                                                        read.size))
    return read.size


@contextmanager
def _asynchronous_commits() -> Iterator[None]:
    """Commits that do not wait for the WAL flush, for this session, for a while.

    Each group of entries commits on its own before its objects are stored: visible at
    once to anyone, and kept if this process dies. Only a crash of the database server
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
        pipeline = _FilePipeline(cursor, backup=backup, schema=schema, workers=settings.BACKUP_FILE_WORKERS)
        return pipeline.run(paths)


class _FilePipeline:
    """A backup's file phase: stats, reads (with their hash) and uploads on worker threads,
    the database on this one.

    The threads overlap one file's hashing with another's read and a third's upload
    (backups.files.threads); this thread does one INSERT and one SELECT per group of
    files that finished meanwhile. Files are recorded in the order they were listed;
    each group's entries are committed before any of its uploads starts, so whatever
    this backup may have stored, its record names. At most 2 × workers files are
    examined ahead and as many uploads are in flight, each holding at most
    SPOOL_MAX_BYTES in memory: memory stays flat in the number and size of files.
    """

    def __init__(self, cursor, *, backup: BackupRecord, schema: str, workers: int):
        self.cursor, self.backup, self.schema = cursor, backup, schema
        self.media, self.store = media_storage(), backup_storage()
        self.max_length = file_name_max_length()
        self.trusted = _trusted_backups(self.store)
        self.result = StoredFiles()
        self.stored_now: set[str] = set()
        self.threads = FileThreads("backup-files", workers)
        self.examining: InOrder[_Examined] = InOrder(self.threads)
        self.uploads: InOrder[int] = InOrder(self.threads)

    def run(self, paths: Iterable[str]) -> StoredFiles:
        try:
            for batch in batched(paths):
                previous = _previous_entries(batch, self.trusted)
                for path in batch:
                    self.examining.start(_examine, self.media, self.schema, self.max_length, path, previous.get(path))
                    if self.examining.full():
                        self._record_finished()
            while self.examining:
                self._record_finished()
            while self.uploads:
                self._uploaded(self.uploads.take())
        finally:
            self._abandon()
        return self.result

    def _record_finished(self) -> None:
        """Record the oldest file and every one after it that is done, then start their uploads."""
        group = self.examining.take_done()
        # The entries before the objects: whatever this backup may have stored, its record names.
        _insert_entries(self.cursor, self.schema, [read.entry(self.backup) for read in group if not read.refused])
        kill_point("backup.files.entries_written")
        fresh = [read for read in group if read.buffer is not None]
        stored = self.stored_now | _named_by_trusted({read.sha256 for read in fresh} - self.stored_now, self.trusted)
        for read in group:
            if read.refused:
                self.result.refused.append((read.path, read.refused))
                continue
            if not read.sha256:
                self.result.missing.append(read.path)
                continue
            self.result.count, self.result.size = self.result.count + 1, self.result.size + read.size
            if read.buffer is None:
                continue
            if read.sha256 in stored:
                read.buffer.close()
                continue
            stored.add(read.sha256)
            self.stored_now.add(read.sha256)
            self.uploads.start(_upload, self.store, file_object_key(self.schema, read.sha256), read)
        while self.uploads.full():
            self._uploaded(self.uploads.take())

    def _uploaded(self, size: int) -> None:
        if size:
            self.result.uploaded, self.result.uploaded_bytes = self.result.uploaded + 1, self.result.uploaded_bytes + size

    def _abandon(self) -> None:
        """After a failure: nothing more starts, and the buffers read ahead are closed."""
        self.threads.shutdown()
        for examined in self.examining.finished():
            if examined.buffer is not None:
                examined.buffer.close()
