"""The storage backups live in: Django's Storage API under STORAGES["backups"]."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from django.core.files import File
from django.core.files.storage import Storage, storages

from backups.errors import StorageNameTakenError, StorageObjectExistsError, StorageObjectMissingError
from backups.storage.sealed import SealedStorage
from core.faults import die_now, kill_after_bytes

COPY_CHUNK_SIZE = 1024 * 1024


def backup_storage() -> SealedStorage:
    """STORAGES["backups"] behind its sealing layer (backups.storage.sealed): every caller reads and writes through it."""
    return SealedStorage(storages["backups"])


def storage_sealing(schema: str) -> dict:
    """How a new backup of this clinic is sealed, for its manifest ({} when written plain)."""
    return backup_storage().sealing(schema)


def storage_save_exactly(store: Storage, key: str, content: File) -> None:
    """Store content under exactly key, never over an object already there. A storage that
    finds the name taken saves under another one: that copy is removed and the save fails,
    since records name key. Supabase Storage, asked not to upsert, refuses the upload instead
    (a name taken between its check and its upload): the same failure."""
    try:
        name = store.save(key, content)
    except StorageObjectExistsError:
        raise StorageNameTakenError(details={"operation": "upload", "object": key}) from None
    if name != key:
        store.delete(name)
        raise StorageNameTakenError(details={"operation": "upload", "object": key})


def storage_open(name: str):
    """Open a stored object for streaming; a missing object is a domain error on every backend."""
    try:
        return backup_storage().open(name, "rb")
    except StorageObjectMissingError:
        raise  # already ours, and more precise (a sealed object whose clinic key is gone)
    except FileNotFoundError as exc:
        raise StorageObjectMissingError(details={"file_path": name}) from exc


@dataclass(frozen=True)
class StoredCopy:
    sha256: str
    size: int


def copy_hashed(source: BinaryIO, destination: BinaryIO | None = None) -> StoredCopy:
    """Stream source into destination (or only through the hash), with bounded memory."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(COPY_CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
        if destination is not None:
            destination.write(chunk)
    if destination is not None:
        destination.flush()
    return StoredCopy(sha256=digest.hexdigest(), size=size)


def storage_copy(name: str, destination: BinaryIO | None = None) -> StoredCopy:
    """A stored object copied (or only hashed) by copy_hashed."""
    with storage_open(name) as stored_file:
        return copy_hashed(stored_file, destination)


class _KilledAfterBytes:
    """A test's kill point on a stream: the process dies once `limit` bytes went through."""

    def __init__(self, source: BinaryIO, limit: int):
        self._source, self._limit, self._count = source, limit, 0

    def read(self, size: int = -1) -> bytes:
        if self._count >= self._limit:
            die_now()
        chunk = self._source.read(min(size if size and size > 0 else COPY_CHUNK_SIZE, self._limit - self._count))
        self._count += len(chunk)
        return chunk

    def __getattr__(self, name):
        return getattr(self._source, name)


def killable(source: BinaryIO, point: str) -> BinaryIO:
    """source itself, or, when a test armed `point@N` (core.faults), a reader that dies after N bytes."""
    limit = kill_after_bytes(point)
    return source if limit is None else _KilledAfterBytes(source, limit)
