"""EventReader: the upload read as ijson's events (its C backend), one by one."""
from __future__ import annotations

from typing import Any, BinaryIO, Iterator

import ijson
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.guarded_stream import PARSE_BUFFER, LimitExceeded
from backup_restore.reader.base import (
    _STREAM_ERRORS, MAX_JSON_DEPTH, SectionRows, _batched, _past_declared, _Reader, _reason,
)

try:  # the C backend is several times faster; fall back to whatever ijson picked
    _ijson = ijson.get_backend("yajl2_c")
except Exception:  # pragma: no cover
    _ijson = ijson

_SCALARS = frozenset({"string", "number", "boolean", "null"})


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

    def _keys(self) -> Iterator[str]:
        """The keys of the object whose start was just read, each with the next event its value's."""
        while True:
            event, key = self._next()
            if event == "end_map":
                return
            yield key

    def _rows_begin(self, label: str) -> None:
        if self._next()[0] != "start_array":
            raise errors.WrongFormatError(details={"model": label, "reason": _("`rows` debe ser una lista.")})

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
            yield from self._section_members(
                self._keys(), declared, rows_begin=self._rows_begin,
                rows_of=lambda label, names: SectionRows(_batched(self._rows(label, names, declared))))
        self._declared_sections_found(declared)
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
