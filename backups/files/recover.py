"""A backup's patient files back at their media paths from its file list alone: the database was lost.

The operator replays the dump (`gunzip | psql`), then runs
`manage.py restore_backup_files --list <key of the .files.jsonl.gz>`:
1. The list (backups.files.list) streams from the backups storage; its header names the
   clinic and so where the content objects are. Nothing is read from the database, where
   neither the clinic nor its backup records need exist. It is read through once before
   anything is written: its header must name the clinic it is stored under (the key's
   first folder, or --tenant), every line must be well formed and bounded, and there must
   be as many entries as the header says. A list that fails any of these writes nothing.
2. Each path must lie under that clinic's folder (core.media_names): any other is refused,
   reported, and neither read nor written.
3. A free path gets the content object's bytes, hashed while they are copied: a damaged
   or missing object writes nothing and is reported.
4. A path holding the same bytes is left as it is; a path holding other bytes is never
   overwritten, only reported (someone may have stored a newer file there since). As in
   a restore (backups.files.restore) files are only created, so a second run writes
   nothing twice, and a run cut short is finished by running it again.
5. An entry the backup lists as missing at backup time has nothing to bring back.
Every entry is tried; the caller learns what happened to each path, and the totals.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Callable

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import Storage

from backups.errors import (
    BackupChecksumMismatchError,
    BackupFileError,
    FileListInvalidError,
    StorageNameTakenError,
    StorageObjectMissingError,
)
from backups.files.threads import FileThreads, in_order
from backups.files.media import file_name_max_length, file_object_key, media_storage
from backups.files.list import file_list_open
from backups.files.restore import media_holds, media_write
from backups.models import BackupFile
from backups.storage.objects import backup_storage
from core.media_names import media_file_refusal

logger = logging.getLogger(__name__)


class Recovered(StrEnum):
    """What happened to one path (or, in a dry run, what would)."""

    WRITTEN = "written"
    PRESENT = "present"  # already there with the same bytes
    ABSENT = "absent"  # missing at backup time: nothing to bring back
    CONFLICT = "conflict"  # other bytes at that path: left alone
    MISSING_OBJECT = "missing_object"
    DAMAGED_OBJECT = "damaged_object"
    REFUSED = "refused"  # a path the media storage refuses (outside its folder)


PROBLEMS = frozenset({Recovered.CONFLICT, Recovered.MISSING_OBJECT, Recovered.DAMAGED_OBJECT, Recovered.REFUSED})


@dataclass
class RecoveredFiles:
    """What a recovery did, per outcome; the header names the clinic and the dump."""

    header: dict
    counts: Counter = field(default_factory=Counter)

    @property
    def problems(self) -> int:
        return sum(self.counts[outcome] for outcome in PROBLEMS)


def _recover_one(media: Storage, store: Storage, schema: str, entry: BackupFile, dry_run: bool) -> Recovered:
    if entry.missing:
        return Recovered.ABSENT
    if media.exists(entry.path):
        return Recovered.PRESENT if media_holds(media, entry.path, entry) else Recovered.CONFLICT
    if dry_run:
        return Recovered.WRITTEN if store.exists(file_object_key(schema, entry.sha256)) else Recovered.MISSING_OBJECT
    try:
        media_write(media, store, schema, entry, entry.path)
    except BackupChecksumMismatchError:
        return Recovered.DAMAGED_OBJECT
    except StorageNameTakenError:
        return Recovered.CONFLICT  # the path was taken while the bytes were copied: not ours
    except BackupFileError as exc:
        if isinstance(exc.__cause__, StorageObjectMissingError):
            return Recovered.MISSING_OBJECT
        raise
    return Recovered.WRITTEN


def _recover_entry(media: Storage, store: Storage, schema: str, dry_run: bool, entry: BackupFile) -> tuple[BackupFile, Recovered]:
    """On a file thread (backups.files.threads): one entry's outcome."""
    if media_file_refusal(media, schema, entry.path, max_length=file_name_max_length()):
        return entry, Recovered.REFUSED
    try:
        return entry, _recover_one(media, store, schema, entry, dry_run)
    except SuspiciousFileOperation:
        return entry, Recovered.REFUSED


def _list_checked(list_key: str, schema: str) -> None:
    """Step 1, before anything is written: the whole list read through and checked."""
    with file_list_open(list_key) as (header, entries):
        if header["schema"] != schema:
            raise FileListInvalidError(details={"object": list_key, "line": 1, "error": "other_clinic"})
        seen = sum(1 for _entry in entries)
    if seen != header["count"]:  # the header says how many follow: a list that lost some is not whole
        raise FileListInvalidError(details={"object": list_key, "expected": header["count"], "entries": seen})


def files_recover(
    *, list_key: str, tenant: str = "", dry_run: bool = False,
    report: Callable[[str, Recovered], None] = lambda path, outcome: None,
) -> RecoveredFiles:
    """Bring back every path of a stored file list whose media path is free (see the map above).

    The paths are checked and written on the file threads: after losing everything, every
    file is a download and an upload, one round trip after another on Supabase or S3.
    They are reported in the list's order."""
    _list_checked(list_key, tenant or list_key.split("/", 1)[0])
    with file_list_open(list_key) as (header, entries), FileThreads("recover-files") as threads:
        result = RecoveredFiles(header=header)
        recover = partial(_recover_entry, media_storage(), backup_storage(), header["schema"], dry_run)
        items = ((BackupFile(path=item["path"], sha256=item["sha256"] or "", size=item["size"]),) for item in entries)
        for entry, outcome in in_order(threads, recover, items):
            result.counts[outcome] += 1
            if outcome in PROBLEMS:
                # The path goes to the operator (report), not to the log: a file's name may be a patient's.
                logger.warning("file list %s: %s", list_key, outcome.value)
            report(entry.path, outcome)
    logger.info("file list %s%s: %s", list_key, " (dry run)" if dry_run else "",
                {outcome.value: count for outcome, count in result.counts.items()})
    return result
