"""A backup's file phase: every file its snapshot's rows name read, hashed and stored once
(steps 2 to 4 of the map at the top of backups.files)."""
from __future__ import annotations

import hashlib
import io
import posixpath
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Iterable, Iterator

from django.conf import settings
from django.core.files.storage import Storage
from django.db import connection

from backups.errors import BackupFileError
from backups.files import SPOOL_MAX_BYTES, batched, file_object_key, media_storage, stored_content
from backups.models import BackupFile, BackupRecord
from backups.storage import COPY_CHUNK_SIZE, StoredCopy, backup_storage, killable, storage_save_exactly
from core.faults import kill_point
from core.files import temporary_file


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


def _upload(store: Storage, key: str, source: IO[bytes], copied: StoredCopy) -> None:
    """Store one content from its spool (closed afterwards); on a worker thread of the file phase."""
    with source:
        source.seek(0)
        storage_save_exactly(store, key, stored_content(killable(source, "backup.files.upload"), posixpath.basename(key),
                                                        copied.size))


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
        pipeline = _FilePipeline(cursor, backup=backup, schema=schema, workers=settings.BACKUP_FILE_WORKERS)
        return pipeline.run(paths)


@dataclass
class _Read:
    """A file being read and hashed on a worker thread, and what its entry needs."""

    path: str
    modified_at: datetime | None
    future: Future


class _FilePipeline:
    """A backup's file phase: reads (with their hash) and uploads on worker threads, the
    database on this one.

    Hashing and file or socket I/O release the GIL, so on N cores the threads overlap
    one file's hashing with another's read and a third's upload. Reads are consumed in
    the order they were started; each one's entry is written (and committed) here
    before its upload is started, so whatever this backup may have stored, its record
    names. At most `workers` + 1 reads and as many uploads are in flight, each holding
    at most SPOOL_MAX_BYTES in memory: memory stays flat in the number and size of files.
    """

    def __init__(self, cursor, *, backup: BackupRecord, schema: str, workers: int):
        self.cursor, self.backup, self.schema, self.workers = cursor, backup, schema, max(1, workers)
        self.media, self.store = media_storage(), backup_storage()
        self.trusted = _trusted_backups(self.store)
        self.result = StoredFiles()
        self.pending: list[BackupFile] = []  # entries not written yet (unchanged or missing files)
        self.stored_now: set[str] = set()
        self.reads: deque[_Read] = deque()
        self.uploads: deque[Future] = deque()
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="backup-files")

    def run(self, paths: Iterable[str]) -> StoredFiles:
        try:
            for batch in batched(paths):
                previous = _previous_entries(batch, self.trusted)
                for path in batch:
                    self._start(path, previous.get(path))
                    while len(self.reads) > self.workers:
                        self._finish_read(self.reads.popleft())
                self._write_pending()
                kill_point("backup.files.batch_stored")
            while self.reads:
                self._finish_read(self.reads.popleft())
            self._write_pending()
            while self.uploads:
                self.uploads.popleft().result()
        finally:
            self._abandon()
        return self.result

    def _start(self, path: str, known: BackupFile | None) -> None:
        """Name an unchanged file from its earlier entry, or start reading it."""
        try:
            size, modified_at = _media_stat(self.media, path)
        except FileNotFoundError:
            self._missing(path)
            return
        if known is not None and modified_at is not None and (known.size, known.modified_at) == (size, modified_at):
            self.pending.append(BackupFile(backup=self.backup, path=path, sha256=known.sha256, size=size,
                                           modified_at=modified_at))
            self.result.count, self.result.size = self.result.count + 1, self.result.size + size
            return
        self.reads.append(_Read(path, modified_at, self.pool.submit(_read_whole, self.media, path)))

    def _finish_read(self, read: _Read) -> None:
        try:
            copied, buffer = read.future.result()
        except FileNotFoundError:  # deleted since it was listed: the dump's rows still name it
            self._missing(read.path)
            return
        self.pending.append(BackupFile(backup=self.backup, path=read.path, sha256=copied.sha256, size=copied.size,
                                       modified_at=read.modified_at))
        # The entry before the object: whatever this backup may have stored, its record names.
        self._write_pending()
        self.result.count, self.result.size = self.result.count + 1, self.result.size + copied.size
        key = file_object_key(self.schema, copied.sha256)
        if copied.sha256 in self.stored_now or _object_stored(self.store, key, copied, self.trusted):
            buffer.close()
            return
        self.stored_now.add(copied.sha256)
        self.uploads.append(self.pool.submit(_upload, self.store, key, buffer, copied))
        self.result.uploaded, self.result.uploaded_bytes = self.result.uploaded + 1, self.result.uploaded_bytes + copied.size
        while len(self.uploads) > self.workers:
            self.uploads.popleft().result()

    def _missing(self, path: str) -> None:
        self.pending.append(BackupFile(backup=self.backup, path=path))
        self.result.missing.append(path)

    def _write_pending(self) -> None:
        _insert_entries(self.cursor, self.schema, self.pending)
        self.pending = []

    def _abandon(self) -> None:
        """After a failure: nothing more starts, and the buffers read ahead are closed."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for read in self.reads:
            if not read.future.cancelled() and read.future.exception() is None:
                read.future.result()[1].close()
