"""BackupReader: the upload's rows parsed by Python's JSON scanner, a block of rows per call where it can."""
from __future__ import annotations

from typing import Any, Iterator

from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.guarded_stream import LimitExceeded
from backup_restore.reader.base import MAX_JSON_DEPTH, SectionRows, _past_declared
from backup_restore.reader.text import _CONTAINERS, _SEPARATOR, _WHITESPACE, JsonText


class BackupReader(JsonText):
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

    def _entry_begins(self, name: Any) -> None:
        self._entry = name if isinstance(name, str) else None
        self._item_begins()

    def _keys(self) -> Iterator[str]:
        """The keys of the object whose `{` was just read, each with _pos at its value."""
        first = True
        while self._member_follows("}", first):
            first = False
            if self._peek() != '"':
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
        while self._member_follows("]", first):
            self._label, self._names = None, None
            first = False
            if self._peek() != "{":
                raise self._wrong_shape(
                    errors.WrongFormatError(details={"reason": _("Cada sección de `data` debe ser un objeto.")}))
            self._pos += 1
            yield from self._section_members(
                self._keys(), declared, rows_begin=self._rows_begin,
                rows_of=lambda label, names: SectionRows(self._rows(label, names, declared)))
        self._declared_sections_found(declared)
        self._document_ends()

    def _rows_begin(self, label: str) -> None:
        if self._peek() != "[":
            raise self._wrong_shape(
                errors.WrongFormatError(details={"model": label, "reason": _("`rows` debe ser una lista.")}))
        self._pos += 1

    def _document_ends(self) -> None:
        """The rest of the document, to the end: a truncated file fails here."""
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
            step = self._step_after_block(label, count, limit, declared, expect_row=expect_row, at_start=at_start)
            if step is None:
                return
            if step == ",":
                expect_row = True
                continue
            count += 1
            self.counts[label] = count
            expect_row, at_start = False, False
            yield [step]

    def _step_after_block(self, label: str, count: int, limit: int | None, declared: dict[str, int] | None, *,
                          expect_row: bool, at_start: bool) -> list | str | None:
        """Where the scanner stopped: None at the section's end, "," past a separator, else the
        row there read value by value; a refusal where none of them is."""
        self._item_begins()
        char = self._peek()
        if char == "]" and (at_start or not expect_row):
            self._pos += 1
            self._guard.row = None
            return None
        if char == "":
            raise self._syntax("")
        if not expect_row:
            if char != ",":
                raise self._syntax("Expecting ',' delimiter")
            self._pos += 1
            return ","
        if char != "[":
            raise self._wrong_shape(errors.InvalidRowError(
                details={"model": label, "pk": None, "reason": _("Cada fila debe ser una lista de valores.")}))
        if limit is not None and count >= limit:
            raise _past_declared(label, declared=declared.get(label), read=count + 1)
        return self._careful_row()

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
            while self._member_follows("]", first):
                first = False
                row.append(self._value())
            return row
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
