"""What both readers share: where the reader is, how a limit and a count are refused, a section's rows."""
from __future__ import annotations

import zlib
from typing import Any, BinaryIO, Callable, Iterator

import ijson
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.guarded_stream import GuardedStream, LimitExceeded, ReadLimits

# Deeper JSON than this is refused: Python and PostgreSQL would recurse through it.
MAX_JSON_DEPTH = 128

_STREAM_ERRORS = (ijson.JSONError, ijson.IncompleteJSONError, OSError, EOFError, zlib.error, UnicodeDecodeError)


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

    def _section(self, label: str, names: list, rows: SectionRows,
                 declared: dict[str, int] | None) -> Iterator[tuple[str, list[str], SectionRows]]:
        """One section given to the consumer; then what it left of the rows read, and their count checked."""
        yield label, names, rows
        for _batch in rows.batches():  # drain what the consumer left
            pass
        if declared is not None:
            _count_check(label, declared=declared.get(label), read=self.counts[label])

    def _section_members(
        self, keys: Iterator[str], declared: dict[str, int] | None, *,
        rows_begin: Callable[[str], None], rows_of: Callable[[str, list], SectionRows],
    ) -> Iterator[tuple[str, list[str], SectionRows]]:
        """One section object's members, its opening brace read: `model` and `fields`, then `rows`,
        given to the consumer (_section). rows_begin(label) reads the rows' opening bracket, refusing
        anything else; rows_of(label, names) iterates them."""
        label, names = None, None
        for key in keys:
            self._entry_begins(key)
            if key == "rows":
                if not isinstance(label, str) or not isinstance(names, list):
                    raise errors.WrongFormatError(
                        details={"reason": _("Una sección debe declarar `model` y `fields` antes de `rows`.")}
                    )
                rows_begin(label)
                self._label, self._names, self._entry = label, names, None
                yield from self._section(label, names, rows_of(label, names), declared)
                self._label, self._names = None, None
            elif key == "model":
                label = self._value()
            elif key == "fields":
                names = self._value()
            else:
                self._value()

    def _declared_sections_found(self, declared: dict[str, int] | None) -> None:
        """A model the header declares and the file has no section of is refused, as a section short of rows."""
        for label, count in (declared or {}).items():
            if label not in self.counts:
                _count_check(label, declared=count, read=0)

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
