"""Reading an uploaded backup file as a stream: gunzip when needed, then its rows a block at a time.

stream.py opens the upload; base.py holds what both readers share; text.py reads the text a block
at a time and values from it; scanner.py is BackupReader, events.py EventReader.

BackupReader parses the upload without loading it, a block of text at a time (PARSE_BUFFER):
the header first, then each model's rows, which the importer consumes a block of rows at a
time as they arrive. Rows are parsed by Python's JSON scanner (C code), a block's whole rows
or a row per call; what it cannot finish in the block is read value by value (see
BackupReader). EventReader does the same with ijson's events, where the scanner is not C code,
and is the reference the tests hold BackupReader to. A malformed or truncated file fails
here with InvalidJSONError (its reason the parser's first line only) or WrongFormatError.

Between the gunzip and the parser sits GuardedStream, which sees every inflated
byte before the parser does, so a hostile file is refused before it costs memory:
1. The inflated size is counted: past RESTORE_MAX_INFLATED_BYTES, 413.
2. The bytes read since the current row (or header entry) began are counted: the
   parser keeps a string it has not finished in memory, so past
   RESTORE_MAX_VALUE_BYTES (a 300 MiB string, a run of gigabytes of whitespace),
   400 naming the model, row and field being read.
3. A row holding more values than its section has fields is refused at the next read.
4. A run of more digits than Python converts to an int (4,300) is refused before the
   parser sees it: ijson's C backend fails on one and crashes the process after.
5. Escaped UTF-16 surrogates without their pair (`\\ud800`) become `\\u0000`: the C
   parser would store them as `?` or fail on its own output, while a NUL is found
   and refused by the importer, naming the row (PostgreSQL stores neither).
Nesting deeper than MAX_JSON_DEPTH is refused while the value is built (or, for a row the
scanner parsed whole, checked as soon as it is). A row past the header's count is refused
as it begins. Bytes that are not UTF-8 are refused once the text before them is read.
"""
from __future__ import annotations

from backup_restore.reader.base import MAX_JSON_DEPTH, SectionRows
from backup_restore.reader.events import EventReader
from backup_restore.reader.scanner import BackupReader
from backup_restore.reader.stream import open_backup_stream
from backup_restore.reader.text import _scanner

if _scanner is None:  # pragma: no cover - an interpreter without the C scanner: ijson's C backend is faster there
    BackupReader = EventReader  # noqa: F811

__all__ = ["MAX_JSON_DEPTH", "BackupReader", "EventReader", "SectionRows", "open_backup_stream"]
