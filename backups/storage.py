"""The storage backups live in: Django's Storage API under STORAGES["backups"]."""
from __future__ import annotations

from django.core.files.storage import Storage, storages

from backups.errors import StorageObjectMissingError


def backup_storage() -> Storage:
    return storages["backups"]


def storage_open(name: str):
    """Open a stored object for streaming; a missing object is a domain error on every backend."""
    try:
        return backup_storage().open(name, "rb")
    except FileNotFoundError as exc:
        raise StorageObjectMissingError(details={"file_path": name}) from exc
