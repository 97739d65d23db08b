"""Rows as COPY text: what the direct load sends PostgreSQL, value for value what the staging path would store."""
from __future__ import annotations

import io
import json
import logging
import operator
from decimal import Decimal
from itertools import repeat
from typing import Callable

import psycopg2
from django.db import models

from backup_restore.values import NUL_ESCAPE

logger = logging.getLogger(__name__)

# A COPY batch ends at this many rows or this many characters of JSON, whichever comes first.


def json_fit(value):
    """Nested JSON (a JSONField's value): Decimal back to float, as Django's own decoder does."""
    if isinstance(value, Decimal):  # the reader gives Decimal only for non-integers
        return float(value)
    if isinstance(value, list):
        return [json_fit(v) for v in value]
    if isinstance(value, dict):
        return {k: json_fit(v) for k, v in value.items()}
    return value


def _dumps_default(value):
    if isinstance(value, Decimal):  # exact: PostgreSQL casts the text
        return str(value)
    raise TypeError(type(value).__name__)


# allow_nan=False: a JSON field's 1e200000 became float("inf"), which jsonb cannot hold.
json_dumps = json.JSONEncoder(default=_dumps_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class NotCopyText(Exception):
    """A value the staging path would read in a way copy_text does not reproduce (a list in a
    text column, a decimal in an integer one): its batch goes through the staging table."""


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _scalar_text(value) -> str:
    """A JSON scalar as COPY text, spelled as jsonb's `->>` spells it (the staging path's reading)."""
    kind = type(value)
    if kind is str:
        return value.translate(_COPY_ESCAPES)
    if value is None:
        return "\\N"
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    raise NotCopyText()


def _decimal_text(value) -> str:
    if type(value) is Decimal:
        return str(value)  # numeric input reads 1E+2 as jsonb's 100: the same number, the same scale once stored
    return _scalar_text(value)


def copy_encoder(f: models.Field) -> Callable[[object], str]:
    """How a field's value from the file is written as COPY text for its column."""
    if isinstance(f, models.JSONField):
        null = "\\N" if f.null else "null"  # the staging path: NULLIF(j->i, 'null') only when nullable

        def encode_json(value) -> str:
            if value is None:
                return null
            try:
                return json_dumps(value).translate(_COPY_ESCAPES)
            except ValueError:  # a number jsonb cannot hold: refused through the staging path
                raise NotCopyText() from None

        return encode_json
    if isinstance(f, models.DecimalField):
        return _decimal_text
    return _scalar_text


_PLAIN_TYPES = frozenset({str, int, type(None)})
_NULL_MARK = "\x01"  # where a null goes while a line is escaped; a value holding one is written value by value
_NULL_FIELD = f"\t{_NULL_MARK}\t"


class CopyRows:
    """A section's rows as COPY text lines for their table, or NotCopyText.

    Most rows hold only strings, integers and nulls: such a row is converted and joined
    by C code (str, join, one escape pass over the whole line) instead of value by value.
    A row holding anything else (a boolean, a decimal) is checked column by column; one
    whose line could be read two ways (a tab or a \\x01 inside a value) is written value by
    value by copy_encoder. All of them write the same text.
    """

    def __init__(self, fields: list[models.Field]):
        self.width = len(fields)
        self.format = "\t".join(["%s"] * len(fields))
        self.encoders = [copy_encoder(f) for f in fields]
        self.json = [(i, f.null) for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
        self.allowed = [frozenset({str, type(None)}) if isinstance(f, models.JSONField)
                        else _PLAIN_TYPES | {Decimal} if isinstance(f, models.DecimalField)
                        else _PLAIN_TYPES | {bool} - {int} if isinstance(f, models.BooleanField)
                        else _PLAIN_TYPES for f in fields]

    def batch_text(self, rows: list[list]) -> str | None:
        """A whole batch's COPY text at once, by C code over its columns; None when a row needs
        line() (a value of another type, a tab, a new line or a \\x01 in a value, a NUL)."""
        columns = list(zip(*rows))
        for i, nullable in self.json:
            try:  # the staging path: NULLIF(j->i, 'null') when nullable
                columns[i] = [None if value is None and nullable else json_dumps(value) for value in columns[i]]
            except ValueError:
                return None
        if not all(map(frozenset.issuperset, self.allowed, map(frozenset, map(map, repeat(type), columns)))):
            return None
        nulls = sum(map(operator.methodcaller("count", None), columns))
        text = "\n".join(map(self.format.__mod__, zip(*columns))) + "\n"
        count = len(rows)
        if text.count("\n") != count or text.count("\t") != count * (self.width - 1):
            return None  # a value holds a tab or a new line: row by row
        if "\x00" in text or NUL_ESCAPE in text:
            return None  # refused row by row, naming the field
        if "\\" in text or "\r" in text:
            text = text.replace("\\", "\\\\").replace("\r", "\\r")
        if nulls:  # each field reading None is a null (twice: adjacent ones share a tab; the key is never null)
            text = text.replace("\tNone\t", _NULL_FIELD).replace("\tNone\t", _NULL_FIELD).replace("\tNone\n", f"\t{_NULL_MARK}\n")
            if text.count(_NULL_MARK) != nulls:
                return None
            text = text.replace(_NULL_MARK, "\\N")
        return text

    def line(self, row: list) -> str:
        values = row
        if self.json:
            values = list(row)
            for i, nullable in self.json:
                if values[i] is not None or not nullable:  # the staging path: NULLIF(j->i, 'null') when nullable
                    try:
                        values[i] = json_dumps(values[i])
                    except ValueError:  # a number jsonb cannot hold: refused through the staging path
                        raise NotCopyText() from None
        # Strings, integers and nulls suit every column (a JSON one holds its text by now);
        # a boolean only suits a boolean column, a decimal a decimal one.
        if _PLAIN_TYPES.issuperset(map(type, values)) or all(map(operator.contains, self.allowed, map(type, values))):
            line = self.format % tuple(values)
            nulls = values.count(None)
            if nulls:  # each field reading None is a null (twice: adjacent ones share a tab)
                line = f"\t{line}\t".replace("\tNone\t", _NULL_FIELD).replace("\tNone\t", _NULL_FIELD)[1:-1]
            # Each tab a separator and each mark a null: no value holds either (nor reads None).
            if line.count("\t") == self.width - 1 and line.count(_NULL_MARK) == nulls:
                if "\\" in line or "\n" in line or "\r" in line:
                    line = line.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
                return line.replace(_NULL_MARK, "\\N") if nulls else line
        return "\t".join([encode(value) for encode, value in zip(self.encoders, row)])


def copy_in_savepoint(raw, sql: str, data: bytes) -> bool:
    """COPY data in a savepoint of its own: True, or False once PostgreSQL refused it and it was rolled back."""
    with raw.cursor() as cursor:
        cursor.execute("SAVEPOINT backup_restore_copy")
        try:
            cursor.copy_expert(sql, io.BytesIO(data), size=1 << 20)
        except (psycopg2.DataError, psycopg2.IntegrityError, psycopg2.ProgrammingError, psycopg2.InternalError):
            cursor.execute("ROLLBACK TO SAVEPOINT backup_restore_copy")
            return False
        finally:
            cursor.execute("RELEASE SAVEPOINT backup_restore_copy")
    return True
