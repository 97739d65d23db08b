"""A restore's file phase: every path the staging rows name gets its backup-time content in the
media storage, by creating files only (see backups.files' map)."""
from __future__ import annotations

import posixpath
import tempfile
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from django.core.files.storage import Storage
from django.db import connection

from backups.errors import BackupChecksumMismatchError, BackupFileError, StorageObjectMissingError
from backups.files.threads import FileThreads, in_order
from backups.files.cleanup import CreatedNames
from backups.files.media import (
    batched,
    file_fields,
    file_name_max_length,
    file_object_key,
    file_warnings,
    media_storage,
    paths_read,
    paths_write,
    spool,
    stored_content,
)
from backups.models import BackupFile, BackupRecord
from backups.storage.objects import backup_storage, copy_hashed, killable, storage_open, storage_save_exactly
from core.faults import kill_point
from core.files import TEMP_PREFIX, temp_dir
from core.media_names import media_file_refusal


@dataclass
class RestoredFiles:
    """What a restore's file phase did."""

    checked: int = 0
    written: int = 0
    renamed: int = 0
    missing: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): nothing read or written

    def warnings(self, schema: str) -> list[dict]:
        return file_warnings(schema, refused=self.refused, missing=self.missing)


def media_holds(media: Storage, name: str, entry: BackupFile) -> bool:
    """Whether the media storage has `name` with exactly the entry's content."""
    try:
        if media.size(name) != entry.size:
            return False
        with media.open(name, "rb") as existing:
            return copy_hashed(existing).sha256 == entry.sha256
    except FileNotFoundError:
        return False


def _fit(name: str, max_length: int) -> str:
    """name shortened (its stem, never its folder or extension) to max_length characters."""
    if len(name) <= max_length:
        return name
    folder, base = posixpath.split(name)
    stem, extension = posixpath.splitext(base)
    keep = max_length - len(name) + len(stem)
    if keep < 1:
        raise BackupFileError(details={"operation": "name", "path": name, "max_length": max_length})
    return posixpath.join(folder, stem[:keep] + extension)


def versioned_name(path: str, sha256: str, max_length: int) -> str:
    """Where a content goes when its path holds other bytes: the same folder, its hash in the name."""
    folder, base = posixpath.split(path)
    stem, extension = posixpath.splitext(base)
    suffix = f".{sha256[:12]}{extension}"
    stem = stem[: max(1, max_length - len(folder) - 1 - len(suffix))] if folder else stem[: max(1, max_length - len(suffix))]
    return posixpath.join(folder, stem + suffix)


def media_write(media: Storage, store: Storage, schema: str, entry: BackupFile, name: str) -> None:
    """Create a media file holding entry's content at exactly name: StorageNameTakenError when
    someone took the name meanwhile (what the storage saved under another one is removed)."""
    with spool() as buffer:
        try:
            # Closed at once: on Supabase an open object is a streamed HTTP response holding a connection.
            with storage_open(file_object_key(schema, entry.sha256)) as stored:
                copied = copy_hashed(stored, buffer)
        except StorageObjectMissingError as exc:
            raise BackupFileError(details={"operation": "read", "path": entry.path,
                                           "object": file_object_key(schema, entry.sha256)}) from exc
        if copied.sha256 != entry.sha256:
            raise BackupChecksumMismatchError(details={"path": entry.path, "expected": entry.sha256, "actual": copied.sha256})
        buffer.seek(0)
        content = stored_content(killable(buffer, "restore.files.write"), posixpath.basename(name), copied.size)
        # Storage.save never replaces an existing file; the name the caller checked, or nothing.
        storage_save_exactly(media, name, content)


def _rewrite(schema: str, renames: list[tuple[str, str]]) -> None:
    """Point the schema's rows from each old path to its new one (every file field)."""
    if not renames:
        return
    values = ", ".join(["(%s, %s)"] * len(renames))
    params = [value for pair in renames for value in pair]
    with connection.cursor() as cursor:
        for model, model_field in file_fields():
            column, table = model_field.column, model._meta.db_table
            cursor.execute(
                f'UPDATE "{schema}"."{table}" AS t SET "{column}" = m.new FROM (VALUES {values}) AS m(old, new) '
                f'WHERE t."{column}" = m.old',
                params,
            )


@dataclass
class _Placed:
    """Where one path's content is in the media storage: target None when the backup has nothing to
    bring back (the row keeps its path); `write` when target is free and the content must be created there."""

    path: str
    target: str | None = None
    entry: BackupFile | None = None
    write: bool = False
    written: bool = False
    missing: bool = False
    refused: str = ""


@dataclass(frozen=True)
class _Names:
    """The clinics whose folders a restore's names must stay in (core.media_names): the one the
    staging rows come from, and the one the files are written for (the same, in place)."""

    source: str
    target: str
    max_length: int
    longest: int


def _check(media: Storage, rename: Callable[[str], str], names: _Names, path: str, entry: BackupFile | None) -> _Placed:
    """On a worker thread: where the path's content is, or the free name it must be written to
    (steps a to c of backups.restore's map). A name outside the source clinic's folder, or one
    whose new name would fall outside the target's, is refused: nothing is read or written."""
    refusal = media_file_refusal(media, names.source, path, max_length=names.longest)
    if refusal is None and entry is not None and not entry.missing:
        refusal = media_file_refusal(media, names.target, _fit(rename(path), names.max_length), max_length=names.longest)
    if refusal is not None:
        return _Placed(path, refused=refusal)
    max_length = names.max_length
    if entry is None or entry.missing:
        # Not in the backup (missing at backup time): nothing to bring back.
        return _Placed(path, missing=not media.exists(path))
    target = _fit(rename(path), max_length)
    if media_holds(media, target, entry):
        return _Placed(path, target)
    if media.exists(target):
        # Other bytes at that name, perhaps a file live rows name: never touched.
        target = versioned_name(target, entry.sha256, max_length)
        if media_holds(media, target, entry):
            return _Placed(path, target)
    return _Placed(path, target, entry, write=True)


def _write(media: Storage, store: Storage, schema: str, placed: _Placed) -> _Placed:
    """On a worker thread, once its name is recorded: create the file (a name taken since the
    check fails the restore: any other name would be one backups.files.cleanup never finds)."""
    media_write(media, store, schema, placed.entry, placed.target)
    placed.written = True
    return placed


def _share_or_separate(placed: list[_Placed], media: Storage, max_length: int) -> None:
    """Two paths of a batch may need one free name (a new clinic's folder maps `<clinic>/x` and
    `x` both to `<new>/x`; shortening long names to fit can make two equal). As if the first
    had been written already: a later one with the same content shares its file, one with
    other content goes beside it, under its versioned name."""
    claimed: dict[str, str] = {}  # name: the sha256 of the content written there
    for item in placed:
        if not item.write:
            continue
        sha256 = item.entry.sha256
        if claimed.get(item.target, sha256) != sha256:
            item.target = versioned_name(item.target, sha256, max_length)
            if media_holds(media, item.target, item.entry):
                item.write = False
                continue
        if claimed.get(item.target) == sha256:
            item.write = False
            continue
        claimed[item.target] = sha256


def restore_files(
    *, backup: BackupRecord, staging: str, rename: Callable[[str], str] = lambda path: path,
    created: CreatedNames | None = None, target_schema: str = "",
) -> RestoredFiles:
    """Give every path the staging rows name its backup-time content in the media storage (see the map above).

    rename maps a restored path to where it should live (a new clinic's own folder);
    the rows are rewritten in staging wherever the content ends up elsewhere. Each
    path's check, then each write, runs on the file threads (backups.files.threads):
    after losing the media storage every file is downloaded, one round trip after
    another on Supabase or S3. The database (the listing, the entries, the names about
    to be created, the rewrites) stays on this thread: a batch's free names are
    recorded (created) before any is written (backups.files.cleanup), and its rows are
    rewritten only once all its files are written.
    """
    media, store, schema = media_storage(), backup_storage(), connection.schema_name
    max_length = min((model_field.max_length or 100 for _model, model_field in file_fields()), default=100)
    names = _Names(schema, target_schema or schema, max_length, file_name_max_length())
    created = created if created is not None else CreatedNames(None)
    result = RestoredFiles()
    with tempfile.TemporaryFile(dir=temp_dir(), prefix=TEMP_PREFIX) as listing:
        with connection.cursor() as cursor:
            paths_write(cursor, staging, listing)
        kill_point("restore.files.before_write")
        with FileThreads("restore-files") as threads:
            for batch in batched(paths_read(listing)):
                entries = {entry.path: entry for entry in BackupFile.objects.filter(backup=backup, path__in=batch)}
                placed = list(in_order(threads, partial(_check, media, rename, names),
                                       [(path, entries.get(path)) for path in batch]))
                _share_or_separate(placed, media, max_length)
                to_write = [item for item in placed if item.write]
                created.record([item.target for item in to_write])
                kill_point("restore.files.recorded")
                list(in_order(threads, partial(_write, media, store, schema), [(item,) for item in to_write]))
                renames: list[tuple[str, str]] = []
                for item in placed:
                    _count(result, renames, item)
                kill_point("restore.files.before_rewrite")
                _rewrite(staging, renames)
                result.renamed += len(renames)
    kill_point("restore.files.done")
    return result


def _count(result: RestoredFiles, renames: list[tuple[str, str]], placed: _Placed) -> None:
    if placed.refused:
        result.refused.append((placed.path, placed.refused))
        return
    if placed.target is None:
        if placed.missing:
            result.missing.append(placed.path)
        return
    result.checked += 1
    result.written += placed.written
    if placed.target != placed.path:
        renames.append((placed.path, placed.target))


def new_clinic_rename(source_schema: str, new_schema: str) -> Callable[[str], str]:
    """A new clinic's files in its own folder: `<source>/x` becomes `<new>/x`, anything else `<new>/…`."""
    prefix = f"{source_schema}/"

    def rename(path: str) -> str:
        return f"{new_schema}/{path[len(prefix):]}" if path.startswith(prefix) else f"{new_schema}/{path}"

    return rename
