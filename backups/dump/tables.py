"""Each table's rows in a dump, counted and hashed as the dump is written, and the same
count and hash read back from a schema: how a restore drill knows the replay restored
exactly the rows the backup wrote (backups.drills, step 4 of its map).

A table's checksum is the sha256 of its COPY data as text, the bytes between
`COPY … FROM stdin;` and `\\.`, and its row count the number of lines there (COPY's text
format escapes newlines inside values, so a line is a row). Read back from a schema
with `COPY … TO STDOUT` under the session settings pg_dump uses (cached.SESSION_SETTINGS
and the backup's time zone), a freshly replayed table yields the same bytes in the same
order: COPY FROM into the table it just created writes rows in the order it reads them,
and a sequential scan without synchronized scans reads them back in that order.

- `TableDigests.feed` parses a dump's SQL stream (pg_dump's output), keeping only a few
  bytes between chunks; `table_begin`/`table_data`/`table_end` take a table's data when
  the writer knows where it starts and ends (the cached dump).
- `schema_table_digests` reads every table of a schema back the same way.
An adapter: it knows SQL text and sessions, nothing of models.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

ALGORITHM = "sha256-copy-text-v1"
_TERMINATOR = b"\n\\.\n"
_HEADER = b"\nCOPY "
# `COPY schema.table (columns) FROM stdin;` as pg_dump prints it: each name bare or quoted.
_IDENTIFIER = rb'(?:"(?:[^"]|"")+"|[^".\s(]+)'
_COPY_LINE = re.compile(rb"^COPY (?P<schema>" + _IDENTIFIER + rb")\.(?P<table>" + _IDENTIFIER + rb") .* FROM stdin;$")


def copy_table_name(line: bytes) -> str | None:
    """The table of a `COPY schema.table (…) FROM stdin;` line, as printed (quoted if it must be)."""
    found = _COPY_LINE.match(line)
    return found["table"].decode() if found else None


class TableDigests:
    """{table: {"rows", "sha256"}} of the COPY blocks written, in the dump's order."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}
        self._table: str | None = None
        self._digest: Any = None
        self._rows = 0
        self._pending = b"\n"  # the stream's start counts as a line start
        self._at_line_start = True

    # -- a writer that knows the boundaries (backups.dump.cached)

    def table_begin(self, table: str) -> None:
        self._table, self._digest, self._rows = table, hashlib.sha256(), 0

    def table_data(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        """data[start:end], the next bytes of the current table's rows (sliced without a copy)."""
        end = len(data) if end is None else end
        self._digest.update(memoryview(data)[start:end])
        self._rows += data.count(b"\n", start, end)

    def table_end(self) -> None:
        self.tables[self._table] = {"rows": self._rows, "sha256": self._digest.hexdigest()}
        self._table = self._digest = None

    # -- a stream to parse (pg_dump's output)

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the dump's SQL, in order; any chunking."""
        # Only the few bytes that may start a token cut between chunks are kept, and mostly none:
        # joining them to every 1 MiB chunk would copy the whole dump once more.
        buffer = self._pending + chunk if self._pending else chunk
        position = 0
        while position is not None:
            position = self._inside(buffer, position) if self._table is not None else self._outside(buffer, position)

    def _outside(self, buffer: bytes, position: int) -> int | None:
        start = buffer.find(_HEADER, position)
        if start < 0:
            self._pending = _cut_start(buffer, position, _HEADER)  # a header cut between chunks
            return None
        end = buffer.find(b"\n", start + 1)
        if end < 0:
            self._pending = buffer[start:]
            return None
        table = copy_table_name(buffer[start + 1:end])
        if table is None:
            return end  # a statement that starts with COPY but is not a data block's
        self.table_begin(table)
        self._at_line_start = True
        return end + 1

    def _inside(self, buffer: bytes, position: int) -> int | None:
        if self._at_line_start and buffer.startswith(b"\\.\n", position):
            return self._block_end(buffer, position + 3)
        found = buffer.find(_TERMINATOR, position)
        if found >= 0:
            self.table_data(buffer, position, found + 1)
            return self._block_end(buffer, found + len(_TERMINATOR))
        # The terminator may be cut between chunks: keep a line start's `\` or `\.` for the next one.
        keep_from = len(buffer)
        for start in (len(buffer) - 2, len(buffer) - 1):
            line_start = buffer[start - 1:start] == b"\n" if start > position else self._at_line_start
            if start >= position and line_start and b"\\.".startswith(buffer[start:]):
                keep_from = start
                break
        if keep_from > position:
            self.table_data(buffer, position, keep_from)
            self._at_line_start = buffer[keep_from - 1:keep_from] == b"\n"
        self._pending = buffer[keep_from:]
        return None

    def _block_end(self, buffer: bytes, after: int) -> int:
        self.table_end()
        # The terminator's newline may start the next header: search from it.
        return after - 1


def _cut_start(buffer: bytes, position: int, token: bytes) -> bytes:
    """The end of buffer (from position on) that the next chunk may complete into token: its longest
    suffix that is a prefix of token, usually nothing."""
    for size in range(min(len(token) - 1, len(buffer) - position), 0, -1):
        if buffer.endswith(token[:size]):
            return buffer[-size:]
    return b""


def table_digest_empty() -> dict[str, Any]:
    return {"rows": 0, "sha256": hashlib.sha256(b"").hexdigest()}


class _Hasher:
    """What COPY TO writes, hashed and counted, through a file-like write()."""

    def __init__(self) -> None:
        self.digests = TableDigests()

    def write(self, data) -> None:
        self.digests.table_data(data if isinstance(data, bytes) else data.encode())


def schema_table_digests(session, schema: str, tables: list[str]) -> dict[str, dict[str, Any]]:
    """Each named table of schema (as `COPY` prints names), read back by COPY TO in one
    REPEATABLE READ transaction on session (a psycopg2 connection whose settings match the dump's)."""
    hasher = _Hasher()
    with session.cursor() as cursor:
        for table in tables:
            hasher.digests.table_begin(table)
            cursor.copy_expert(f'COPY "{schema}".{table} TO STDOUT', hasher)
            hasher.digests.table_end()
    return hasher.digests.tables
