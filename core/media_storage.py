"""Patient files on the local disk, each one whole at its name or not there at all.

STORAGES["default"] when patient files are not in object storage (core.storage_settings).
Django's FileSystemStorage writes a new file in place, chunk after chunk: a process
killed mid-write (a restore bringing a lost radiograph back, an upload; gunicorn's
timeout, a deploy, the OOM killer) leaves the first bytes at a name a row holds, and the
next backup stores them as that patient's file. Here a save:
1. writes the bytes to a file of its own in `<location>/.partial/` (PARTIAL_FOLDER, mode
   0700), flocked while its writer lives (core.files.named_file_locked). No clinic's name
   can reach that folder: every name starts with its clinic's schema (core.media_names);
2. flushes them to disk (fsync), so that not even a machine crash publishes a file
   whose blocks were never written;
3. publishes them with os.link at the name: link fails when the name exists, so a file
   is never overwritten (the "create only" a restore relies on, backups.files.restore)
   and the name appears with every byte at once. A name taken meanwhile gets another,
   as Django's storage does (storage_save_exactly refuses that one);
4. removes the partial name.
A writer killed before 4 leaves a partial file nobody locks: the reaper removes it
(media_partials_reap, from backups.jobs.reaper). The folder must be one file system (a
link cannot cross a mount).
"""
from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, storages
from django.utils._os import safe_makedirs
from django.utils.deconstruct import deconstructible

from core.files import named_file_locked, unlocked_files_remove

PARTIAL_FOLDER = ".partial"


@deconstructible(path="core.media_storage.MediaFileSystemStorage")
class MediaFileSystemStorage(FileSystemStorage):
    """FileSystemStorage whose new files appear whole at their names, never over another file."""

    def __init__(self, **options):
        if options.get("allow_overwrite"):
            raise ImproperlyConfigured("MediaFileSystemStorage nunca sobrescribe un archivo de paciente (allow_overwrite).")
        super().__init__(**options)

    @property
    def partial_folder(self) -> Path:
        return Path(self.location) / PARTIAL_FOLDER

    def _save(self, name: str, content) -> str:
        full_path = self.path(name)
        self._make_folder(os.path.dirname(full_path))
        self.partial_folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0o666 less the umask, as FileSystemStorage creates files; the folder keeps others out meanwhile.
        partial, descriptor = named_file_locked(self.partial_folder, mode=0o666)
        try:
            with os.fdopen(descriptor, "wb", closefd=False) as handle:
                for chunk in content.chunks():
                    handle.write(chunk.encode() if isinstance(chunk, str) else chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(partial, self.file_permissions_mode)
            full_path = self._publish(partial, name)
        finally:
            partial.unlink(missing_ok=True)
            os.close(descriptor)  # last: the lock holds the reaper off until the name is gone
        self._ensure_location_group_id(full_path)
        return os.path.relpath(full_path, self.location).replace("\\", "/")

    def _publish(self, partial: Path, name: str) -> str:
        """The partial file's bytes at name, or, if someone took it, at the name Django would pick next."""
        while True:
            full_path = self.path(name)
            try:
                os.link(partial, full_path)
                return full_path
            except FileExistsError:
                name = self.get_available_name(name)
                self._make_folder(os.path.dirname(self.path(name)))

    def _make_folder(self, directory: str) -> None:
        """The file's folder and those above it, as FileSystemStorage makes them."""
        try:
            if self.directory_permissions_mode is not None:
                safe_makedirs(directory, self.directory_permissions_mode, exist_ok=True)
            else:
                os.makedirs(directory, exist_ok=True)
        except FileExistsError:
            raise FileExistsError(f"{directory} exists and is not a directory.") from None


def media_partials_reap() -> list[str]:
    """The reaper's part: remove the partial files of saves whose process died (step 4 of the map)."""
    media = storages["default"]
    if not isinstance(media, MediaFileSystemStorage):
        return []
    return unlocked_files_remove(media.partial_folder)
