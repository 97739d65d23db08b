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
from core.faults import kill_point

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


class _KillPointReader(io.RawIOBase):
    """An empty part of the script that passes a kill point when it is read: everything before it was fed."""

    def __init__(self, point: str):
        self._point = point

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        kill_point(self._point)
        return b""


def replay_script_parts(*, schema: str, staging: str, aside: str, guard_sql: str = "") -> tuple[bytes, bytes]:
    """The SQL around the dump: one explicit transaction that leaves the live schema as it was.
    guard_sql runs first in it (a drill's: core.locks.drill_replay_guard_sql)."""
    prelude = f'BEGIN;\n{guard_sql}ALTER SCHEMA "{schema}" RENAME TO "{aside}";\n'.encode()
    postlude = (
        f'\n;ALTER SCHEMA "{schema}" RENAME TO "{staging}";\n'
        f'ALTER SCHEMA "{aside}" RENAME TO "{schema}";\n'
        "COMMIT;\n"
    ).encode()
    return prelude, postlude


def dump_replay(
    *, binaries: PgBinaries, params: PgConnectionParams, schema: str, staging: str, aside: str, dump_file: BinaryIO,
    progress: Callable[[int], None] | None = None, guard_sql: str = "", kill_name: str = "restore.replay",
    error_codes: bool = False,
) -> None:
    """Replay a gzipped dump of `schema` into `staging`; the live schema is never changed.

    kill_name names the test kill points of the feed (core.faults): `<kill_name>@<bytes>`, and
    `<kill_name>.prelude_fed`, reached once psql has the prelude and before any of the dump.
    With error_codes, psql's errors carry their SQLSTATE: a drill tells a preemption (57P01,
    55P03) from a bad dump by them.
    """
    prelude, postlude = replay_script_parts(schema=schema, staging=staging, aside=aside, guard_sql=guard_sql)
    with gzip.GzipFile(fileobj=dump_file, mode="rb") as dump_sql:
        script = _ConcatenatedReader([io.BytesIO(prelude), _KillPointReader(f"{kill_name}.prelude_fed"),
                                      _CountedReader(killable(dump_sql, kill_name), progress), io.BytesIO(postlude)])
        run_psql(binaries=binaries, params=params, script=script, extra_args=("-v", "VERBOSITY=verbose") if error_codes else ())
    # psql exits 0 when its input ends before COMMIT (the transaction then rolls back):
    # only the staging schema's existence proves the replay committed.
    if not schema_exists(staging):
        raise RestoreFailedError(details={"reason": "replay_not_committed"})
