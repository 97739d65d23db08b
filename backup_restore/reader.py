"""Reading an uploaded backup file as a stream: gunzip when needed, then JSON events one by one.

ijson (its C backend) parses the upload without loading it: the header comes
first, then each model's rows, which the importer consumes as they arrive. A
malformed or truncated file fails here with InvalidJSONError or WrongFormatError.

Between the gunzip and the parser sits _GuardedStream, which sees every inflated
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
Nesting deeper than MAX_JSON_DEPTH is refused while the value is built.
"""
from __future__ import annotations

import gzip
import io
import re
import sys
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

import ijson
from django.conf import settings
from django.utils.translation import gettext as _

from backup_restore import errors

try:  # the C backend is several times faster; fall back to whatever ijson picked
    _ijson = ijson.get_backend("yajl2_c")
except Exception:  # pragma: no cover
    _ijson = ijson

PARSE_BUFFER = 1 << 18
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
    return " ".join(str(exc).split())[:300] or type(exc).__name__


@dataclass(frozen=True)
class ReadLimits:
    """How much a file may inflate to, and how big one row or header entry may be (bytes of JSON)."""

    max_bytes: int
    max_value_bytes: int

    @classmethod
    def from_settings(cls) -> "ReadLimits":
        return cls(max_bytes=settings.RESTORE_MAX_INFLATED_BYTES, max_value_bytes=settings.RESTORE_MAX_VALUE_BYTES)


class _LimitExceeded(Exception):
    """Raised inside the parser's read(); BackupReader turns it into a RestoreError naming the row."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


# An escaped surrogate, with the backslashes before it: a valid pair, or one alone.
_SURROGATE_ESCAPES = re.compile(
    rb"(\\+)u(?:[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(?P<lone>[dD][89a-fA-F][0-9a-fA-F]{2}))"
)
_NUL_ESCAPE = b"\\u0000"
_ESCAPE_MAX = 12  # the longest escape the screen looks at: a surrogate pair


def _whole_escapes_end(buf: bytes) -> int:
    """Where to split `buf` so that no escape (nor the backslashes before it) is cut in two."""
    first = buf.find(b"\\", max(0, len(buf) - _ESCAPE_MAX))
    if first < 0:
        return len(buf)
    return len(buf[: first + 1].rstrip(b"\\"))  # back to the start of that run of backslashes


def _screened(buf: bytes, end: int) -> tuple[bytes, int]:
    """buf[:end] with each lone surrogate escape replaced by \\u0000 (same length), and where it ended."""
    if b"\\u" not in buf:
        return buf[:end], end
    out = None
    pos = 0
    while (match := _SURROGATE_ESCAPES.search(buf, pos)) and match.start() < end:
        if match.end() > end:  # a pair across the split: both halves go to the next read
            end = match.start()
            break
        run = len(match.group(1))
        if run % 2 == 0:  # an escaped backslash, then a plain "u": look again after it
            pos = match.start() + run + 1
            continue
        if match.group("lone"):
            start = match.start() + run - 1
            out = out if out is not None else bytearray(buf)
            out[start : start + len(_NUL_ESCAPE)] = _NUL_ESCAPE
        pos = match.end()
    return (bytes(out[:end]) if out is not None else buf[:end]), end


_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")


class _GuardedStream:
    """The inflated upload as the parser reads it: counted, bounded and screened (see the module docstring)."""

    def __init__(self, inner: BinaryIO, limits: ReadLimits):
        self._inner = inner
        self._carry = b""
        self.limits = limits
        self.total = 0
        self.mark = 0  # `total` when the row or header entry being read began
        self.row: list | None = None  # the row being read, and how many values it may hold
        self.row_max = 0
        self._max_digits = sys.get_int_max_str_digits()
        self._digit_run = 0  # digits at the end of what the parser was given
        self._refuse_next: str | None = None

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        if self._refuse_next:  # raised now, the parser has given every event before the refused value
            raise _LimitExceeded(self._refuse_next)
        while True:
            data = self._inner.read(size if size and size > 0 else PARSE_BUFFER)
            self._count(len(data))
            buf = self._carry + data if self._carry else data
            if not data:  # the end: whatever was held back goes out
                self._carry = b""
                return self._digits_checked(_screened(buf, len(buf))[0])
            out, end = _screened(buf, _whole_escapes_end(buf))
            self._carry = buf[end:]
            if out:  # an empty answer would mean the end to the parser
                return self._digits_checked(out)

    def _digits_checked(self, out: bytes) -> bytes:
        """`out`, or the part before a run of too many digits (refused at the next read)."""
        limit = self._max_digits
        if not limit or not out:
            return out
        flat = out.translate(_DIGITS_AS_ZEROS)
        head = len(flat) - len(flat.lstrip(b"0"))
        if self._digit_run + head > limit:
            raise _LimitExceeded("digits")
        found = flat.find(b"0" * (limit + 1))
        if found > 0:
            self._refuse_next = "digits"
            return out[:found]
        self._digit_run = self._digit_run + head if head == len(flat) else len(flat) - len(flat.rstrip(b"0"))
        return out

    def _count(self, size: int) -> None:
        self.total += size
        if self.total > self.limits.max_bytes:
            raise _LimitExceeded("inflated")
        # One read of slack: the read that finished the previous row counts from this row's mark.
        if self.total - self.mark > self.limits.max_value_bytes + PARSE_BUFFER:
            raise _LimitExceeded("value")
        if self.row is not None and len(self.row) > self.row_max:
            raise _LimitExceeded("row")


def _count_check(label: str, *, declared: int | None, read: int) -> None:
    if declared is None:
        raise errors.CountMismatchError(details={"model": label, "declared": None, "read": read, "reason": _(
            "La cabecera no declara este modelo.")})
    if read != declared:
        raise errors.CountMismatchError(details={"model": label, "declared": declared, "read": read, "reason": _(
            "La cabecera declara %(declared)s filas y el archivo trae %(read)s.") % {"declared": declared, "read": read}})


class BackupReader:
    """Walks a backup file as ijson events: the header first, then one section per model.

    `key_of(label)` names a model's primary key field, so that a value refused while
    it is read is reported with its row's key. `counts` holds how many rows each
    section had, once read.
    """

    def __init__(self, stream: BinaryIO, *, limits: ReadLimits | None = None,
                 key_of: Callable[[str], str | None] = lambda label: None):
        self._guard = _GuardedStream(stream, limits or ReadLimits.from_settings())
        self._events = _ijson.basic_parse(self._guard, use_float=False, buf_size=PARSE_BUFFER)
        self._key_of = key_of
        self._label: Any = None  # where the reader is, for a refusal to say
        self._names: list | None = None
        self._entry: str | None = None
        self.counts: dict[str, int] = {}

    @property
    def bytes_read(self) -> int:
        """How many inflated bytes of the file the parser has consumed so far."""
        return self._guard.total

    def _next(self):
        try:
            return next(self._events)
        except StopIteration:
            raise errors.InvalidJSONError(details={"reason": _("El archivo termina antes de tiempo.")}) from None
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details={"reason": _reason(exc)}) from None
        except _LimitExceeded as exc:
            raise self._refusal(exc) from None

    def _refusal(self, exc: _LimitExceeded) -> errors.RestoreError:
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
                    raise self._refusal(_LimitExceeded("depth"))
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
        another number of rows, and a declared model with no section, are refused:
        a file cut short and closed again is well-formed JSON, but not the file it was.
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
                    rows = self._rows(label, names)
                    yield label, names, rows
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
            except _LimitExceeded as exc:
                raise self._refusal(exc) from None

    def _rows(self, label: str, names: list) -> Iterator[list]:
        events = self._events
        value_of = self._value
        guard = self._guard
        guard.row_max = len(names)
        count = self.counts.get(label, 0)
        try:
            for event, value in events:
                if event == "start_array":
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
        except _LimitExceeded as exc:
            raise self._refusal(exc) from None
        raise errors.InvalidJSONError(details={"model": label, "reason": _("El archivo termina antes de tiempo.")})
