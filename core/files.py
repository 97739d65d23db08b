"""Files the project writes: how their names carry the time, and where temporary ones live.

Temporary files hold patient data (a dump, an upload), so they are created in
one directory of the project's (BACKUP_TEMP_DIR, mode 0700), readable by their
owner only, and unlinked from the moment they are created: the kernel frees
them when the process that holds them ends, however it ends (SIGKILL and the
OOM killer included). Nothing is left for a reaper to find; `temp_dir_reap`
removes whatever other code may have left there by name.

A file that must have a name while it is written (a patient file published with a
hard link, core.media_storage) is flocked by its writer for as long as it lives
(`named_file_locked`); `unlocked_files_remove` removes those whose writer died.
"""
from __future__ import annotations

import fcntl
import logging
import os
import secrets
import tempfile
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.utils import timezone

logger = logging.getLogger(__name__)

FILE_NAME_TIMESTAMP = "%Y-%m-%d_%H-%M-%S"
TEMP_PREFIX = "clinica-"


def file_name_timestamp(moment: datetime | None = None) -> str:
    """The moment in UTC, for file names: the same instant gets the same name whatever
    the server's or the clinic's time zone, and names sort in time order."""
    return (moment or timezone.now()).astimezone(dt_timezone.utc).strftime(FILE_NAME_TIMESTAMP)


def temp_dir() -> Path:
    directory = Path(settings.BACKUP_TEMP_DIR)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)  # mkdir's mode is masked by umask, and an existing folder keeps its own
    return directory


def temporary_file() -> IO[bytes]:
    """An anonymous read-write file in the project's temporary folder: no name, mode 0600."""
    # TemporaryFile uses O_TMPFILE on Linux (or unlinks right after mkstemp): the file
    # never has a name another process could open, and vanishes with its last descriptor.
    return tempfile.TemporaryFile(dir=temp_dir(), prefix=TEMP_PREFIX)


def temp_dir_reap() -> list[str]:
    """Remove files in the temporary folder that no live process holds a lock on."""
    return unlocked_files_remove(temp_dir())


def unlocked_files_remove(folder: Path) -> list[str]:
    """Remove the files in folder that no live process holds a lock on; their names.

    A process that names a file of its own in such a folder holds an exclusive flock on
    it while it lives (see named_file_locked); the kernel drops the lock when that process
    dies, however it dies. The file is unlinked while the lock is held here, so its writer,
    waiting for the lock, finds it unlinked and takes another name.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if not path.is_file() or path.is_symlink():
            continue
        try:
            with open(path, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
                removed.append(path.name)
        except BlockingIOError:
            continue  # a live operation owns it
        except FileNotFoundError:
            continue
    if removed:
        logger.warning("reaper removed %s temporary file(s) in %s", len(removed), folder)
    return removed


def named_file_locked(folder: Path, *, mode: int = 0o600) -> tuple[Path, int]:
    """A new file under a random name in folder, open for writing and flocked by this process:
    unlocked_files_remove leaves it alone while this process lives, and removes it after."""
    while True:
        path = folder / f"{TEMP_PREFIX}{secrets.token_hex(12)}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        # A reaper may have taken the lock between the create and the flock, and unlinked
        # the file (it does so holding the lock): then this one has no name, take another.
        if os.fstat(descriptor).st_nlink:
            return path, descriptor
        os.close(descriptor)


class AnonymousUploadedFile(UploadedFile):
    """An upload spooled to an anonymous temporary file instead of a named one."""

    def __init__(self, name, content_type, size, charset, content_type_extra=None):
        super().__init__(temporary_file(), name, content_type, size, charset, content_type_extra)

    def close(self):
        try:
            return self.file.close()
        except FileNotFoundError:
            pass


class AnonymousFileUploadHandler(FileUploadHandler):
    """Django's TemporaryFileUploadHandler, but the file has no name: a killed worker leaves
    no copy of the clinic's data on disk."""

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.file = AnonymousUploadedFile(self.file_name, self.content_type, 0, self.charset, self.content_type_extra)

    def receive_data_chunk(self, raw_data, start):
        self.file.write(raw_data)

    def file_complete(self, file_size):
        self.file.seek(0)
        self.file.size = file_size
        return self.file

    def upload_interrupted(self):
        if hasattr(self, "file"):
            self.file.close()
