"""A dump replayed by psql into a staging schema, leaving the live schema as it was
(step 2 of backups.restore's map). The dump hard-codes the schema's name and editing
its text corrupts data, so the script renames the live schema aside, replays the dump
(which recreates the live name), renames the result to the staging name and the live
schema back, all inside one BEGIN … COMMIT written into the script itself: psql's
`--single-transaction` commits what it was fed when its input simply ends."""
from __future__ import annotations

import gzip
import io
from typing import BinaryIO, Callable, Iterable

from django_tenants.utils import schema_exists

from backups.dump.pg_tools import PgBinaries, PgConnectionParams, run_psql
from backups.storage.objects import COPY_CHUNK_SIZE, killable
from core.errors import RestoreFailedError

PROGRESS_EVERY_BYTES = 8 * 1024 * 1024


class _ConcatenatedReader(io.RawIOBase):
    """One readable stream made of several: prelude SQL, the dump, postlude SQL."""

    def __init__(self, parts: Iterable[BinaryIO]):
        self._parts = iter(parts)
        self._current = next(self._parts, None)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._current is not None:
            chunk = self._current.read(size if size and size > 0 else COPY_CHUNK_SIZE)
            if chunk:
                return chunk
            self._current = next(self._parts, None)
        return b""


class _CountedReader(io.RawIOBase):
    """The dump as psql reads it, reporting progress."""

    def __init__(self, source: BinaryIO, progress: Callable[[int], None] | None):
        self._source = source
        self._progress = progress
        self._reported = 0
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size if size and size > 0 else COPY_CHUNK_SIZE)
        self.count += len(chunk)
        # Every PROGRESS_EVERY_BYTES, and once at the end: a small dump reports its whole size too.
        if self._progress and (self.count - self._reported >= PROGRESS_EVERY_BYTES or (not chunk and self.count > self._reported)):
            self._reported = self.count
            self._progress(self.count)
        return chunk


def replay_script_parts(*, schema: str, staging: str, aside: str) -> tuple[bytes, bytes]:
    """The SQL around the dump: one explicit transaction that leaves the live schema as it was."""
    prelude = f'BEGIN;\nALTER SCHEMA "{schema}" RENAME TO "{aside}";\n'.encode()
    postlude = (
        f'\n;ALTER SCHEMA "{schema}" RENAME TO "{staging}";\n'
        f'ALTER SCHEMA "{aside}" RENAME TO "{schema}";\n'
        "COMMIT;\n"
    ).encode()
    return prelude, postlude


def dump_replay(
    *, binaries: PgBinaries, params: PgConnectionParams, schema: str, staging: str, aside: str, dump_file: BinaryIO,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Replay a gzipped dump of `schema` into `staging`; the live schema is never changed."""
    prelude, postlude = replay_script_parts(schema=schema, staging=staging, aside=aside)
    with gzip.GzipFile(fileobj=dump_file, mode="rb") as dump_sql:
        script = _ConcatenatedReader([io.BytesIO(prelude), _CountedReader(killable(dump_sql, "restore.replay"), progress), io.BytesIO(postlude)])
        run_psql(binaries=binaries, params=params, script=script)
    # psql exits 0 when its input ends before COMMIT (the transaction then rolls back):
    # only the staging schema's existence proves the replay committed.
    if not schema_exists(staging):
        raise RestoreFailedError(details={"reason": "replay_not_committed"})
