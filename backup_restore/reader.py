"""Reading an uploaded backup file as a stream: gunzip when needed, then JSON events one by one.

ijson (its C backend) parses the upload without loading it: the header comes
first, then each model's rows, which the importer consumes as they arrive. A
malformed or truncated file fails here with InvalidJSONError or WrongFormatError.

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
Nesting deeper than MAX_JSON_DEPTH is refused while the value is built.
"""
from __future__ import annotations

import gzip
import io
import zlib
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


class BackupReader:
    """Walks a backup file as ijson events: the header first, then one section per model.

    `key_of(label)` names a model's primary key field, so that a value refused while
    it is read is reported with its row's key. `counts` holds how many rows each
    section had, once read.
    """

    def __init__(self, stream: BinaryIO, *, limits: ReadLimits | None = None,
                 key_of: Callable[[str], str | None] = lambda label: None):
        self._guard = GuardedStream(stream, limits or ReadLimits.from_settings())
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
        except LimitExceeded as exc:
            raise self._refusal(exc) from None

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
