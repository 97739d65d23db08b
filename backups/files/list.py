"""The file list stored beside each dump: which media path held which content, readable without the database.

A backup's BackupFile rows are the only map from its content objects
(`<clinic>/files/<ab>/<sha256>`) back to media paths, and they live in the database.
An operator who lost the database can replay the dump (`gunzip | psql`), so the map
is stored beside the dump too:
1. Its key is the dump's, `.sql.gz` becoming `.files.jsonl.gz` (file_list_key). The dump
   and its list are one backup's objects (backup_objects): whatever removes the dump (a
   failed backup, the reaper, backup_delete and so retention) removes both.
2. Its content is gzip of JSON lines: a header (FORMAT, its version, the clinic, the
   dump's name and checksums, where the content objects are, how many entries follow),
   then {"path", "sha256", "size"} per entry in path order (sha256 null: the file was missing
   at backup time); sealed (backups.storage.sealed), an entry also has "object", the name
   its content is stored under (a keyed hash), so that the `age` CLI alone can bring it back. Entries are read with a server-side cursor and written
   through an anonymous temporary file: memory stays bounded whatever the clinic's size.
3. backup_run writes it after the file phase, before the record is `completed`; its key,
   sha256 and size go in the manifest (`files.list`), which backup_verify re-reads. A
   backup made before lists existed has none there and verifies as it always did.
4. Reading it back needs only the backups storage (file_list_open); the recovery itself
   is backups.files.recover (`manage.py restore_backup_files`).
"""
from __future__ import annotations

import gzip
import json
import logging
import posixpath
import re
import zlib
from contextlib import contextmanager
from typing import IO, Iterator

from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce

from backups.errors import BackupChecksumMismatchError, BackupFileError, FileListInvalidError, StorageObjectMissingError
from backups.files.media import BATCH_SIZE, file_object_key, stored_content
from backups.models import BackupRecord
from backups.dump.pg_tools import DumpResult
from backups.storage.objects import backup_storage, copy_hashed, killable, storage_copy, storage_open, storage_save_exactly
from core.faults import kill_point
from core.files import temporary_file

logger = logging.getLogger(__name__)

FORMAT = "clinica-backup-files"
FORMAT_VERSION = 1
HASH = "sha256"
DUMP_SUFFIX = ".sql.gz"
LIST_SUFFIX = ".files.jsonl.gz"
# What a list read back may name: its content keys are built from these, and must stay in the clinic's folder.
_SCHEMA = re.compile(r"[a-z][a-z0-9_]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The longest line a list may hold: a header, or an entry whose path (at most a file field's
# length, each character at most 12 bytes as JSON escapes it) has its sha256 and size. A
# line read back is read at most this far, so a forged list cannot fill memory with one line.
LINE_MAX_BYTES = 16 * 1024


def file_list_key(file_path: str) -> str | None:
    """Where a dump's file list is stored: beside it, with its stem; None for a name no backup writes."""
    if not file_path.endswith(DUMP_SUFFIX):
        return None  # a record made by hand: no list, and no other backup's list to take for its own
    return file_path[: -len(DUMP_SUFFIX)] + LIST_SUFFIX


def backup_objects(file_path: str) -> list[str]:
    """The objects one backup stores under its own name, removed with it: its dump and its file list."""
    key = file_list_key(file_path)
    return [file_path] if key is None else [file_path, key]


def partial_objects_remove(file_path: str) -> None:
    """Remove whatever a failed or interrupted backup stored under its name, never raising."""
    for name in backup_objects(file_path):
        try:
            storage = backup_storage()
            if storage.exists(name):
                storage.delete(name)
        except Exception:  # noqa: BLE001 - the original failure matters more; this one is logged
            logger.exception("could not remove the partial object %s", name)


def storage_prefix(schema: str) -> str:
    return f"{schema}/files/"


# Writing


def _header(backup: BackupRecord, schema: str, dump: DumpResult) -> dict:
    totals = backup.files.aggregate(
        count=Count("pk"), size=Coalesce(Sum("size"), 0), missing=Count("pk", filter=Q(sha256=""))
    )
    return {"format": FORMAT, "version": FORMAT_VERSION, "schema": schema, "file_name": backup.file_name,
            "created_at": backup.created_at.isoformat(), "sha256": dump.sha256, "sql_sha256": dump.sql_sha256,
            "storage_prefix": storage_prefix(schema), "hash": HASH, **totals}


def _line(item: dict) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _list_write(destination: IO[bytes], backup: BackupRecord, schema: str, dump: DumpResult) -> None:
    # mtime=0 and no file name: the same entries make the same bytes.
    store = backup_storage()
    sealed = store.writes_sealed()
    with gzip.GzipFile(filename="", mode="wb", fileobj=destination, mtime=0) as compressed:
        compressed.write(_line(_header(backup, schema, dump)))
        entries = backup.files.order_by("path").values_list("path", "sha256", "size")
        for path, sha256, size in entries.iterator(chunk_size=BATCH_SIZE):
            entry = {"path": path, "sha256": sha256 or None, "size": size}
            if sealed and sha256:
                # Where its content is stored (a keyed hash): an operator with the `age` CLI alone finds it.
                entry["object"] = store.stored_name(file_object_key(schema, sha256))
            compressed.write(_line(entry))


def file_list_store(*, backup: BackupRecord, schema: str, dump: DumpResult) -> dict:
    """Store the backup's file list beside its dump; what the manifest records of it (`files.list`)."""
    key = file_list_key(backup.file_path)
    if key is None:
        raise BackupFileError(details={"operation": "list", "file_path": backup.file_path})
    store = backup_storage()
    with temporary_file() as buffer:
        _list_write(buffer, backup, schema, dump)
        buffer.seek(0)
        copied = copy_hashed(buffer)
        buffer.seek(0)
        storage_save_exactly(store, key, stored_content(killable(buffer, "backup.files_list.upload"),
                                                        posixpath.basename(key), copied.size))
    kill_point("backup.files_listed")
    return {"object": key, "sha256": copied.sha256, "size": copied.size}


# Verify


def file_list_check(*, backup: BackupRecord) -> list[dict]:
    """Re-read the backup's file list, if it has one: [] when it matches its sha256, else the problem."""
    listed = (backup.manifest.get("files") or {}).get("list")
    if not listed:
        return []  # made before file lists existed
    try:
        actual = storage_copy(listed["object"]).sha256
    except StorageObjectMissingError:
        return [{"object": listed["object"], "problem": BackupRecord.Integrity.MISSING.value}]
    except BackupChecksumMismatchError:  # sealed, and failing authentication
        return [{"object": listed["object"], "problem": BackupRecord.Integrity.MISMATCH.value}]
    if actual != listed["sha256"]:
        return [{"object": listed["object"], "problem": BackupRecord.Integrity.MISMATCH.value, "actual_sha256": actual}]
    return []


# Reading, without the database


def _checked_header(line: bytes, key: str) -> dict:
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if (not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION
            or header.get("hash") != HASH or not isinstance(header.get("schema"), str)
            or not _SCHEMA.fullmatch(header["schema"]) or header.get("storage_prefix") != storage_prefix(header["schema"])
            or not isinstance(header.get("count"), int)):
        raise FileListInvalidError(details={"object": key, "line": 1})
    return header


def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("path"), str) and bool(entry["path"])
            and isinstance(entry.get("size"), int)
            and (entry.get("sha256") is None or isinstance(entry["sha256"], str) and bool(_SHA256.fullmatch(entry["sha256"]))))


def _bounded_line(lines: IO[bytes], key: str, number: int) -> bytes:
    line = lines.readline(LINE_MAX_BYTES + 1)
    if len(line) > LINE_MAX_BYTES:
        raise FileListInvalidError(details={"object": key, "line": number, "error": "line_too_long"})
    return line


def _entries(lines: IO[bytes], key: str) -> Iterator[dict]:
    number = 1
    while True:
        number += 1
        try:
            line = _bounded_line(lines, key, number)
            if not line:
                return
            entry = json.loads(line)
        except (ValueError, EOFError, zlib.error, gzip.BadGzipFile) as exc:  # cut short, or not this format
            raise FileListInvalidError(details={"object": key, "line": number, "error": type(exc).__name__}) from exc
        if not _valid_entry(entry):
            raise FileListInvalidError(details={"object": key, "line": number})
        yield entry


@contextmanager
def file_list_open(key: str) -> Iterator[tuple[dict, Iterator[dict]]]:
    """A stored file list as it streams from the backups storage: its header (checked) and its entries."""
    with storage_open(key) as stored, gzip.GzipFile(fileobj=stored, mode="rb") as lines:
        try:
            first = _bounded_line(lines, key, 1)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise FileListInvalidError(details={"object": key, "line": 1, "error": type(exc).__name__}) from exc
        yield _checked_header(first, key), _entries(lines, key)
