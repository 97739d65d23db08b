"""Reading an uploaded backup file as a stream: gunzip when needed, then JSON events one by one.

ijson (its C backend) parses the upload without loading it: the header comes
first, then each model's rows, which the importer consumes as they arrive. A
malformed or truncated file fails here with InvalidJSONError or WrongFormatError.
"""
from __future__ import annotations

import gzip
import io
import zlib
from typing import Any, BinaryIO, Iterator

import ijson
from django.utils.translation import gettext as _

from backup_restore import errors

try:  # the C backend is several times faster; fall back to whatever ijson picked
    _ijson = ijson.get_backend("yajl2_c")
except Exception:  # pragma: no cover
    _ijson = ijson

PARSE_BUFFER = 1 << 18


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


class BackupReader:
    """Walks a backup file as ijson events: the header first, then one section per model."""

    def __init__(self, stream: BinaryIO):
        self._events = _ijson.basic_parse(stream, use_float=False, buf_size=PARSE_BUFFER)

    def _next(self):
        try:
            return next(self._events)
        except StopIteration:
            raise errors.InvalidJSONError(details={"reason": _("El archivo termina antes de tiempo.")}) from None
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details={"reason": _reason(exc)}) from None

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
            elif event in ("end_map", "end_array"):
                depth -= 1
            builder.event(event, value)
        return builder.value

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
            if key == "data":
                break
            header[key] = self._value()
        event = self._next()[0]
        if event != "start_array":
            raise errors.WrongFormatError(details={"reason": _("`data` debe ser una lista.")})
        return header

    def sections(self) -> Iterator[tuple[str, list[str], Iterator[list]]]:
        """(model label, field names, rows); each section's rows must be consumed before the next."""
        while True:
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
                if key == "rows":
                    if not isinstance(label, str) or not isinstance(names, list):
                        raise errors.WrongFormatError(
                            details={"reason": _("Una sección debe declarar `model` y `fields` antes de `rows`.")}
                        )
                    event = self._next()[0]
                    if event != "start_array":
                        raise errors.WrongFormatError(details={"model": label, "reason": _("`rows` debe ser una lista.")})
                    rows = self._rows(label)
                    yield label, names, rows
                    for _row in rows:  # drain what the consumer left
                        pass
                elif key == "model":
                    label = self._value()
                elif key == "fields":
                    names = self._value()
                else:
                    self._value()
        # the rest of the document, to the end: a truncated file fails here
        while True:
            try:
                next(self._events)
            except StopIteration:
                return
            except _STREAM_ERRORS as exc:
                raise errors.InvalidJSONError(details={"reason": _reason(exc)}) from None

    def _rows(self, label: str) -> Iterator[list]:
        events = self._events
        value_of = self._value
        try:
            for event, value in events:
                if event == "start_array":
                    row = []
                    append = row.append
                    for event, value in events:
                        if event == "end_array":
                            break
                        if event in _SCALARS:
                            append(value)
                        elif event in ("start_map", "start_array"):
                            append(value_of(event, value))
                        else:
                            raise errors.WrongFormatError(details={"model": label, "reason": _("Fila mal formada.")})
                    yield row
                elif event == "end_array":
                    return
                else:
                    raise errors.InvalidRowError(
                        details={"model": label, "pk": None, "reason": _("Cada fila debe ser una lista de valores.")}
                    )
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details={"model": label, "reason": _reason(exc)}) from None
        raise errors.InvalidJSONError(details={"model": label, "reason": _("El archivo termina antes de tiempo.")})
