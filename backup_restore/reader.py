"""Reading an uploaded backup file as a stream: gunzip when needed, then its rows a block at a time.

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

import codecs
import gzip
import io
import json
import json.scanner
import re
import zlib
from decimal import Decimal
from typing import Any, BinaryIO, Callable, Iterator

import ijson
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.guarded_stream import PARSE_BUFFER, GuardedStream, LimitExceeded, ReadLimits

try:  # the C backend is several times faster; fall back to whatever ijson picked
    _ijson = ijson.get_backend("yajl2_c")
except Exception:  # pragma: no cover
    _ijson = ijson

# Deeper JSON than this is refused: Python and PostgreSQL would recurse through it.
MAX_JSON_DEPTH = 128


def open_backup_stream(source: BinaryIO) -> BinaryIO:
    """The upload as a binary stream, gunzipped when it starts with gzip's magic bytes."""
    if hasattr(source, "seek"):
        source.seek(0)
    magic = source.read(2)
    if hasattr(source, "seek"):
        source.seek(0)
    else:  # pragma: no cover
        source = io.BufferedReader(_Prefixed(magic, source))
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=source, mode="rb")
    return source


class _Prefixed(io.RawIOBase):  # pragma: no cover - only for non-seekable sources
    def __init__(self, prefix: bytes, rest: BinaryIO):
        self.prefix, self.rest = prefix, rest

    def readable(self):
        return True

    def readinto(self, b):
        data = self.prefix or self.rest.read(len(b))
        self.prefix = b""
        b[: len(data)] = data
        return len(data)


_STREAM_ERRORS = (ijson.JSONError, ijson.IncompleteJSONError, OSError, EOFError, zlib.error, UnicodeDecodeError)
_SCALARS = frozenset({"string", "number", "boolean", "null"})


def _reason(exc: BaseException) -> str:
    # Only the parser's first line: yajl's next lines quote the upload around the error, and an
    # upload is patient data (this reason reaches the error body, the bitácora and the log).
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split())[:300] if lines else type(exc).__name__


def _not_declared(label: str, *, read: int) -> errors.CountMismatchError:
    return errors.CountMismatchError(details={"model": label, "declared": None, "read": read, "reason": _(
        "La cabecera no declara este modelo.")})


def _past_declared(label: str, *, declared: int | None, read: int) -> errors.CountMismatchError:
    """A row past the count the header declared: refused as it begins, before it is parsed."""
    if declared is None:
        return _not_declared(label, read=read)
    return errors.CountMismatchError(details={"model": label, "declared": declared, "read": read, "reason": _(
        "La cabecera declara %(declared)s filas y el archivo trae más; la lectura se detuvo en la fila "
        "%(read)s.") % {"declared": declared, "read": read}})


def _count_check(label: str, *, declared: int | None, read: int) -> None:
    if declared is None:
        raise _not_declared(label, read=read)
    if read != declared:
        raise errors.CountMismatchError(details={"model": label, "declared": declared, "read": read, "reason": _(
            "La cabecera declara %(declared)s filas y el archivo trae %(read)s.") % {"declared": declared, "read": read}})


class SectionRows:
    """A section's rows: one by one (iterating), or a block at a time (batches()), never both."""

    def __init__(self, batches: Iterator[list[list]]):
        self._batches = batches

    def batches(self) -> Iterator[list[list]]:
        return self._batches

    def __iter__(self) -> Iterator[list]:
        for batch in self._batches:
            yield from batch


def _batched(rows: Iterator[list], size: int = 1000) -> Iterator[list[list]]:
    """Rows in lists of `size`; those read before a refusal are given before it."""
    batch: list[list] = []
    try:
        for row in rows:
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
    except errors.RestoreError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


class _Reader:
    """What both readers share: the guarded stream, where the reader is, and how a limit is refused."""

    def __init__(self, stream: BinaryIO, *, limits: ReadLimits | None = None,
                 key_of: Callable[[str], str | None] = lambda label: None):
        self._guard = GuardedStream(stream, limits or ReadLimits.from_settings())
        self._key_of = key_of
        self._label: Any = None  # where the reader is, for a refusal to say
        self._names: list | None = None
        self._entry: str | None = None
        self.counts: dict[str, int] = {}

    @property
    def bytes_read(self) -> int:
        """How many inflated bytes of the file the parser has consumed so far."""
        return self._guard.total

    def _refusal(self, exc: LimitExceeded) -> errors.RestoreError:
        """What a limit refuses, naming the model, row and field being read."""
        limits = self._guard.limits
        if exc.kind == "inflated":
            return errors.InflatedTooLargeError(details={"max_inflated_bytes": limits.max_bytes})
        row, names = self._guard.row, self._names
        details: dict[str, Any] = {"model": self._label}
        if row is not None and isinstance(names, list):
            key = self._key_of(self._label) if isinstance(self._label, str) else None
            index = names.index(key) if key in names else len(row)
            details["pk"] = row[index] if index < len(row) and not isinstance(row[index], (list, dict)) else None
            details["field"] = names[len(row)] if len(row) < len(names) else None
        elif self._entry is not None:
            details["field"] = self._entry
        kind = exc.kind
        if kind == "row":
            details.pop("field", None)
            return errors.InvalidRowError(details={**details, "reason": _(
                "La fila tiene más de %(expected)s valores.") % {"expected": len(names or ())}})
        if kind == "value":
            details["reason"] = _("Un valor supera el máximo de %(max)s bytes (o el archivo tiene un tramo "
                                  "sin datos de ese tamaño).") % {"max": limits.max_value_bytes}
            details["max_value_bytes"] = limits.max_value_bytes
        elif kind == "depth":
            details["reason"] = _("El valor JSON está anidado a más de %(max)s niveles.") % {"max": MAX_JSON_DEPTH}
            details["max_depth"] = MAX_JSON_DEPTH
        else:
            details["reason"] = _("El archivo tiene más de %(max)s cifras seguidas (un número que no se puede leer).") % {
                "max": self._guard._max_digits}
        return errors.InvalidValueError(details=details)


class EventReader(_Reader):
    """Walks a backup file as ijson events: the header first, then one section per model.

    BackupReader's fallback where Python's JSON scanner is not C code, and the reference
    the tests hold BackupReader to. `key_of(label)` names a model's primary key field, so
    that a value refused while it is read is reported with its row's key. `counts` holds
    how many rows each section had, once read.
    """

    def __init__(self, stream: BinaryIO, **options):
        super().__init__(stream, **options)
        self._events = _ijson.basic_parse(self._guard, use_float=False, buf_size=PARSE_BUFFER)

    def _next(self):
        try:
            return next(self._events)
        except StopIteration:
            raise errors.InvalidJSONError(details={"reason": _("El archivo termina antes de tiempo.")}) from None
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details={"reason": _reason(exc)}) from None
        except LimitExceeded as exc:
            raise self._refusal(exc) from None

    def _value(self, event=None, value=None):
        if event is None:
            event, value = self._next()
        if event in _SCALARS:
            return value
        if event not in ("start_map", "start_array"):
            raise errors.WrongFormatError(details={"reason": _("Evento JSON inesperado: %(event)s") % {"event": event}})
        builder = ijson.ObjectBuilder()
        builder.event(event, value)
        depth = 1
        while depth:
            event, value = self._next()
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    raise self._refusal(LimitExceeded("depth"))
            elif event in ("end_map", "end_array"):
                depth -= 1
            builder.event(event, value)
        return builder.value

    def _entry_begins(self, name: Any) -> None:
        """A header entry or section key: the value limit counts from here."""
        self._entry = name if isinstance(name, str) else None
        self._guard.mark = self._guard.total

    def header(self) -> dict:
        """Every top-level key before `data`."""
        event = self._next()[0]
        if event != "start_map":
            raise errors.WrongFormatError(details={"reason": _("El archivo no es un objeto JSON.")})
        header: dict[str, Any] = {}
        while True:
            event, key = self._next()
            if event == "end_map":
                raise errors.WrongFormatError(details={"reason": _("El archivo no tiene la clave `data`.")})
            self._entry_begins(key)
            if key == "data":
                break
            header[key] = self._value()
        event = self._next()[0]
        if event != "start_array":
            raise errors.WrongFormatError(details={"reason": _("`data` debe ser una lista.")})
        self._entry = None
        return header

    def sections(self, *, declared: dict[str, int] | None = None) -> Iterator[tuple[str, list[str], Iterator[list]]]:
        """(model label, field names, rows); each section's rows must be consumed before the next.

        With `declared` (rows per model, from the header), a section that ends with
        fewer rows, and a declared model with no section, are refused: a file cut short
        and closed again is well-formed JSON, but not the file it was. A row past the
        count (a model's sections together) is refused as it begins: a file declaring
        3,000 rows and sending millions held the clinic's lock for minutes before its
        end told the count.
        """
        while True:
            self._label, self._names = None, None
            event = self._next()[0]
            if event == "end_array":
                break
            if event != "start_map":
                raise errors.WrongFormatError(details={"reason": _("Cada sección de `data` debe ser un objeto.")})
            label, names = None, None
            while True:
                event, key = self._next()
                if event == "end_map":
                    break
                self._entry_begins(key)
                if key == "rows":
                    if not isinstance(label, str) or not isinstance(names, list):
                        raise errors.WrongFormatError(
                            details={"reason": _("Una sección debe declarar `model` y `fields` antes de `rows`.")}
                        )
                    event = self._next()[0]
                    if event != "start_array":
                        raise errors.WrongFormatError(details={"model": label, "reason": _("`rows` debe ser una lista.")})
                    self._label, self._names, self._entry = label, names, None
                    rows = self._rows(label, names, declared)
                    yield label, names, SectionRows(_batched(rows))
                    for _row in rows:  # drain what the consumer left
                        pass
                    if declared is not None:
                        _count_check(label, declared=declared.get(label), read=self.counts[label])
                elif key == "model":
                    label = self._value()
                elif key == "fields":
                    names = self._value()
                else:
                    self._value()
        for label, count in (declared or {}).items():
            if label not in self.counts:
                _count_check(label, declared=count, read=0)
        # the rest of the document, to the end: a truncated file fails here
        while True:
            try:
                next(self._events)
            except StopIteration:
                return
            except _STREAM_ERRORS as exc:
                raise errors.InvalidJSONError(details={"reason": _reason(exc)}) from None
            except LimitExceeded as exc:
                raise self._refusal(exc) from None

    def _rows(self, label: str, names: list, declared: dict[str, int] | None = None) -> Iterator[list]:
        events = self._events
        value_of = self._value
        guard = self._guard
        guard.row_max = len(names)
        count = self.counts.get(label, 0)
        limit = None if declared is None else declared.get(label, 0)
        try:
            for event, value in events:
                if event == "start_array":
                    if limit is not None and count >= limit:
                        raise _past_declared(label, declared=declared.get(label), read=count + 1)
                    row = []
                    append = row.append
                    guard.row, guard.mark = row, guard.total  # the value limit counts from each row's start
                    for event, value in events:
                        if event == "end_array":
                            break
                        if event in _SCALARS:
                            append(value)
                        elif event in ("start_map", "start_array"):
                            append(value_of(event, value))
                        else:
                            raise errors.WrongFormatError(details={"model": label, "reason": _("Fila mal formada.")})
                    count += 1
                    yield row
                elif event == "end_array":
                    self.counts[label] = count
                    guard.row = None
                    return
                else:
                    raise errors.InvalidRowError(
                        details={"model": label, "pk": None, "reason": _("Cada fila debe ser una lista de valores.")}
                    )
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details={"model": label, "reason": _reason(exc)}) from None
        except LimitExceeded as exc:
            raise self._refusal(exc) from None
        raise errors.InvalidJSONError(details={"model": label, "reason": _("El archivo termina antes de tiempo.")})


# Python's JSON scanner, as C code: one call parses a whole row. Numbers with a fraction or an
# exponent become Decimal, as ijson gives them with use_float=False; NaN and Infinity, which
# the scanner would accept, are not JSON.
def _not_json_constant(name: str):
    raise json.JSONDecodeError("Invalid literal", name, 0)


_scanner = json.scanner.c_make_scanner
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_not_json_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SEPARATOR = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
_CONTAINERS = (list, dict)
_NUMBERS = (int, Decimal)
_NUMBER_GOES_ON = re.compile(r"[0-9.eE+-]*").fullmatch  # all the text left could be more of the number
# A scalar the text ends in may go on in the next block: one failing this close to the end
# (the longest literal, a \uXXXX pair) is read again once the next block is in.
_NEAR_END = 16


class BackupReader(_Reader):
    """Walks a backup file a block of text at a time: the header first, then one section per model.

    The rows of a block are parsed by Python's JSON scanner, a row per call of C code, instead
    of one ijson event per value, whose Python overhead dominated a restore. Anything the
    scanner cannot finish within the block (the row a block cuts, a malformed or hostile
    row) is read again value by value (_careful_row), reading on as needed, where every
    limit of the module docstring applies as it does to EventReader:
    - at most one block is held beyond the row being read, which the value limit bounds,
      as it bounds a header entry (GuardedStream, counted from the row's first byte);
    - a row of more values than fields is refused at the next read, as by EventReader;
    - nesting is built level by level and refused past MAX_JSON_DEPTH; a row the scanner
      parsed whole is checked after (_nesting_checked);
    - the GuardedStream screens (digits, surrogates) see every byte first, as before.
    `key_of(label)` names a model's primary key field; `counts` holds each section's rows.
    """

    def __init__(self, stream: BinaryIO, **options):
        super().__init__(stream, **options)
        self._scan = _scanner(_DECODER)
        self._undecoded = b""  # a character the block cut, for the next
        self._broken: BaseException | None = None  # bytes that are not UTF-8, refused at the next read
        self._text = ""
        self._pos = 0
        self._eof = False

    # -- the text, a block at a time

    def _fill(self, keep: int | None = None) -> bool:
        """Read the next block onto the text, dropping what is before `keep` (else _pos); False at the end."""
        if self._eof:
            return False
        try:
            if self._broken is not None:
                raise self._broken
            data = self._guard.read(PARSE_BUFFER)
            more = self._decoded(data)
        except LimitExceeded as exc:
            raise self._refusal(exc) from None
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details=self._at({"reason": _reason(exc)})) from None
        self._eof = not data and self._broken is None
        keep = self._pos if keep is None else keep
        self._text = self._text[keep:] + more if keep < len(self._text) else more
        self._pos -= keep
        return True

    def _decoded(self, data: bytes) -> str:
        """The block as text; bytes that are not UTF-8 end it, refused once the text before them is read."""
        data = self._undecoded + data if self._undecoded else data
        try:
            text, used = codecs.utf_8_decode(data, "strict", not data)
        except UnicodeDecodeError as exc:
            self._broken = exc
            return data[: exc.start].decode()
        self._undecoded = data[used:]
        return text

    def _item_begins(self) -> None:
        """A row or header entry begins at _pos: the value limit counts from its first byte."""
        tail = self._text[self._pos:]
        self._guard.mark = self._guard.total - (len(tail) if tail.isascii() else len(tail.encode()))

    def _at(self, details: dict) -> dict:
        return {"model": self._label, **details} if isinstance(self._label, str) else details

    def _syntax(self, message: str) -> errors.InvalidJSONError:
        if self._eof and self._pos >= len(self._text):
            message = _("El archivo termina antes de tiempo.")
        else:
            message = _reason(f"parse error: {message}")
        return errors.InvalidJSONError(details=self._at({"reason": message}))

    def _peek(self) -> str:
        """The next character that is not white space ('' at the end of the file); _pos is on it."""
        while True:
            self._pos = _WHITESPACE.match(self._text, self._pos).end()
            if self._pos < len(self._text):
                return self._text[self._pos]
            if not self._fill():
                return ""

    def _expect(self, char: str, message: str) -> None:
        if self._peek() != char:
            raise self._syntax(message)
        self._pos += 1

    # -- values, value by value

    def _scalar(self):
        """A string, number or literal at _pos, read on while it may go on past the text held."""
        while True:
            start = self._pos
            try:
                value, end = self._scan(self._text, start)
            except StopIteration:
                failed, message = start, "Expecting value"
            except json.JSONDecodeError as exc:
                if exc.msg.startswith("Unterminated") and self._string_read_on(start):
                    continue
                failed, message = (len(self._text) if exc.msg.startswith("Unterminated") else exc.pos), exc.msg
            except (ValueError, ArithmeticError):  # a number Python cannot hold
                failed, message = len(self._text), "Invalid number"
            else:  # a number cut after `1.` or `1e` is read as 1: one the text may cut is read again
                if self._eof or type(value) not in _NUMBERS or not _NUMBER_GOES_ON(self._text, end):
                    self._pos = end
                    return value
                failed, message = end, ""
            if self._eof or len(self._text) - failed > _NEAR_END or not self._fill(keep=start):
                raise self._syntax(message or "Expecting value")

    def _string_read_on(self, start: int) -> bool:
        """The text from the string at `start` on, read on until a block holds a quote (False at the end).

        The blocks wait in a list, joined once: a string read by concatenating each block to
        what came before held the value limit twice over while it grew, and scanned it again
        at every block."""
        if self._eof:
            return False
        pieces = [self._text[start:]]
        self._text, self._pos = "", 0
        while self._fill():
            pieces.append(self._text)
            if '"' in self._text:
                break
            self._text, self._pos = "", 0
        self._text, self._pos = "".join(pieces), 0
        return True

    def _value(self):
        """One JSON value, containers built level by level: deeper than MAX_JSON_DEPTH is refused."""
        char = self._peek()
        if char != "[" and char != "{":
            if char == "":
                raise self._syntax("Expecting value")
            return self._scalar()
        self._pos += 1
        root: Any = [] if char == "[" else {}
        stack = [root]
        first = True
        while stack:
            top = stack[-1]
            char = self._peek()
            if char == ("]" if type(top) is list else "}"):  # after a comma, a member is read first
                self._pos += 1
                stack.pop()
                first = False
                continue
            if not first:
                if char != ",":
                    raise self._syntax("Expecting ',' delimiter")
                self._pos += 1
                char = self._peek()
            first = False
            if type(top) is dict:
                if char != '"':
                    raise self._syntax("Expecting property name enclosed in double quotes")
                key = self._scalar()
                self._expect(":", "Expecting ':' delimiter")
                char = self._peek()
            if char == "[" or char == "{":
                if len(stack) >= MAX_JSON_DEPTH:
                    raise self._refusal(LimitExceeded("depth"))
                self._pos += 1
                child: Any = [] if char == "[" else {}
                stack.append(child)
                first = True
            else:
                child = self._scalar()
            if type(top) is list:
                top.append(child)
            else:
                top[key] = child
        return root

    def _wrong_shape(self, error: errors.RestoreError) -> errors.RestoreError:
        """`error` for a JSON value of the wrong kind; a parse error for what is no JSON value at all."""
        if self._peek() not in ("{", "["):
            self._value()  # a parse error is the parser's, as EventReader says it
        return error

    def _entry_begins(self, name: Any) -> None:
        self._entry = name if isinstance(name, str) else None
        self._item_begins()

    def _keys(self) -> Iterator[str]:
        """The keys of the object whose `{` was just read, each with _pos at its value."""
        first = True
        while True:
            char = self._peek()
            if char == "}":
                self._pos += 1
                return
            if not first:
                if char != ",":
                    raise self._syntax("Expecting ',' delimiter")
                self._pos += 1
                char = self._peek()
            first = False
            if char != '"':
                raise self._syntax("Expecting property name enclosed in double quotes")
            self._entry_begins(None)
            key = self._scalar()
            self._expect(":", "Expecting ':' delimiter")
            yield key

    # -- the document

    def header(self) -> dict:
        """Every top-level key before `data`."""
        self._item_begins()
        if self._peek() != "{":
            raise self._wrong_shape(errors.WrongFormatError(details={"reason": _("El archivo no es un objeto JSON.")}))
        self._pos += 1
        header: dict[str, Any] = {}
        self._top_keys = self._keys()
        for key in self._top_keys:
            self._entry_begins(key)
            if key == "data":
                break
            header[key] = self._value()
        else:
            raise errors.WrongFormatError(details={"reason": _("El archivo no tiene la clave `data`.")})
        if self._peek() != "[":
            raise self._wrong_shape(errors.WrongFormatError(details={"reason": _("`data` debe ser una lista.")}))
        self._pos += 1
        self._entry = None
        return header

    def sections(self, *, declared: dict[str, int] | None = None) -> Iterator[tuple[str, list[str], SectionRows]]:
        """(model label, field names, rows); each section's rows must be consumed before the next.

        With `declared` (rows per model, from the header), a section that ends with
        fewer rows, and a declared model with no section, are refused; a row past the
        count (a model's sections together) is refused as it begins (EventReader.sections).
        """
        first = True
        while True:
            self._label, self._names = None, None
            char = self._peek()
            if char == "]":
                self._pos += 1
                break
            if not first:
                if char != ",":
                    raise self._syntax("Expecting ',' delimiter")
                self._pos += 1
                char = self._peek()
            first = False
            if char != "{":
                raise self._wrong_shape(
                    errors.WrongFormatError(details={"reason": _("Cada sección de `data` debe ser un objeto.")}))
            self._pos += 1
            label, names = None, None
            for key in self._keys():
                self._entry_begins(key)
                if key == "rows":
                    if not isinstance(label, str) or not isinstance(names, list):
                        raise errors.WrongFormatError(
                            details={"reason": _("Una sección debe declarar `model` y `fields` antes de `rows`.")}
                        )
                    if self._peek() != "[":
                        raise self._wrong_shape(
                            errors.WrongFormatError(details={"model": label, "reason": _("`rows` debe ser una lista.")}))
                    self._pos += 1
                    self._label, self._names, self._entry = label, names, None
                    rows = self._rows(label, names, declared)
                    yield label, names, SectionRows(rows)
                    for _batch in rows:  # drain what the consumer left
                        pass
                    if declared is not None:
                        _count_check(label, declared=declared.get(label), read=self.counts[label])
                    self._label, self._names = None, None
                elif key == "model":
                    label = self._value()
                elif key == "fields":
                    names = self._value()
                else:
                    self._value()
        for label, count in (declared or {}).items():
            if label not in self.counts:
                _count_check(label, declared=count, read=0)
        # the rest of the document, to the end: a truncated file fails here
        self._entry = None
        for key in self._top_keys:
            self._entry_begins(key)
            self._value()
        self._entry = None
        if self._peek() != "":
            raise self._syntax("trailing garbage")

    def _rows(self, label: str, names: list, declared: dict[str, int] | None) -> Iterator[list[list]]:
        """The section's rows, a block at a time: those the scanner parsed whole, then one read
        value by value where it could not (the block's last, cut row; a row out of the ordinary)."""
        guard = self._guard
        guard.row_max = len(names)
        count = self.counts.get(label, 0)
        limit = None if declared is None else declared.get(label, 0)
        scan, separator = self._scan, _SEPARATOR.match
        expect_row = True  # after `[` or a comma; else after a row
        at_start = True
        while True:
            text, pos = self._text, self._pos
            batch: list[list] = []
            if not expect_row and (found := separator(text, pos)):
                pos, expect_row = found.end(), True
            elif expect_row:
                pos = _WHITESPACE.match(text, pos).end()
            if expect_row and count != limit and (whole := self._whole_rows(text, pos, limit and limit - count)):
                rows, pos = whole
                count += len(rows)
                self._pos, self.counts[label], at_start = pos, count, False
                yield rows
            start = pos
            ends: list[int] = []
            # The scanner's own rows: each a whole list (no cut row, no error), ending in `]`.
            while expect_row and count != limit:
                try:
                    row, end = scan(text, pos)
                except (StopIteration, ValueError, ArithmeticError, RecursionError):
                    break
                if type(row) is not list:
                    break
                batch.append(row)
                ends.append(end)
                count += 1
                pos, expect_row, at_start = end, False, False
                if found := separator(text, end):
                    pos, expect_row = found.end(), True
            self._pos = pos
            self.counts[label] = count
            if batch:
                # Fewer brackets in the values than the limit: none is nested that deep.
                nested = text.count("[", start, pos) + text.count("{", start, pos) - len(batch)
                refusal = self._too_deep(batch, text, start, ends) if nested > MAX_JSON_DEPTH else None
                if refusal is not None:
                    if refusal[0]:
                        yield batch[: refusal[0]]
                    raise refusal[1]
                yield batch
            # What the scanner left: the end of the section, a separator, or a row value by value.
            self._item_begins()
            char = self._peek()
            if char == "]" and (at_start or not expect_row):
                self._pos += 1
                guard.row = None
                return
            if char == "":
                raise self._syntax("")
            if not expect_row:
                if char != ",":
                    raise self._syntax("Expecting ',' delimiter")
                self._pos += 1
                expect_row = True
                continue
            if char != "[":
                raise self._wrong_shape(errors.InvalidRowError(
                    details={"model": label, "pk": None, "reason": _("Cada fila debe ser una lista de valores.")}))
            if limit is not None and count >= limit:
                raise _past_declared(label, declared=declared.get(label), read=count + 1)
            row = self._careful_row()
            count += 1
            self.counts[label] = count
            expect_row, at_start = False, False
            yield [row]

    def _whole_rows(self, text: str, pos: int, room: int | None) -> tuple[list[list], int] | None:
        """The rows from `pos` to the text's last `],\\n[`, by one call of the scanner, and where the
        next row begins; None where the row by row loop must read them (fewer than `room`).

        A raw new line is never inside a JSON string, so that `],` ends a row, or a value nested
        in one: wrapped in brackets, the text up to it then does not parse whole (the scanner
        stops early or fails). Nesting is checked as _rows checks it, by counting brackets.
        """
        cut = text.rfind("],\n[", pos)
        if cut < pos:
            return None
        try:
            rows, end = self._scan(f"[{text[pos:cut + 1]}]", 0)
        except (StopIteration, ValueError, ArithmeticError, RecursionError):
            return None
        if end != cut + 3 - pos or (room is not None and len(rows) > room) or set(map(type, rows)) != {list}:
            return None
        if text.count("[", pos, cut) + text.count("{", pos, cut) - len(rows) >= MAX_JSON_DEPTH:
            return None
        return rows, cut + 2

    def _careful_row(self) -> list:
        """The row at _pos (its `[`), value by value: every limit applies as its bytes are read."""
        guard = self._guard
        self._item_begins()
        self._pos += 1
        row: list = []
        guard.row = row  # the row limit and a refusal's pk and field look at it
        try:
            first = True
            while True:
                char = self._peek()
                if char == "]":  # after a comma, a value is read first
                    self._pos += 1
                    return row
                if not first:
                    if char != ",":
                        raise self._syntax("Expecting ',' delimiter")
                    self._pos += 1
                first = False
                row.append(self._value())
        finally:
            guard.row = None

    def _too_deep(self, batch: list[list], text: str, start: int, ends: list[int]) -> tuple[int, errors.RestoreError] | None:
        """The first row of a batch with a value nested deeper than MAX_JSON_DEPTH (the scanner
        goes as deep as Python's recursion limit), and its refusal; None when there is none.
        Only a row whose text holds more brackets than that is looked into."""
        count = text.count
        for index, (row, end) in enumerate(zip(batch, ends)):
            if count("[", start, end) + count("{", start, end) <= MAX_JSON_DEPTH + 1:
                start = end
                continue
            start = end
            for position, value in enumerate(row):
                if isinstance(value, _CONTAINERS) and _depth(value) > MAX_JSON_DEPTH:
                    self._guard.row = row[:position]
                    try:
                        return index, self._refusal(LimitExceeded("depth"))
                    finally:
                        self._guard.row = None
        return None


def _depth(value) -> int:
    """How deeply a value is nested (a scalar 0, [] 1), looking no deeper than MAX_JSON_DEPTH + 1."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if level > deepest:
            deepest = level
            if deepest > MAX_JSON_DEPTH:
                return deepest
        members = item.values() if type(item) is dict else item
        pending.extend((member, level + 1) for member in members if isinstance(member, _CONTAINERS))
    return deepest


if _scanner is None:  # pragma: no cover - an interpreter without the C scanner: ijson's C backend is faster there
    BackupReader = EventReader  # noqa: F811
