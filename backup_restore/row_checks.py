"""The checks every row of a section passes before it is written, by either path (step 4 of
importer.py's map): its length, its key, its files' names, its JSON fields as Django reads them."""
from __future__ import annotations

import operator
from decimal import Decimal
from typing import Callable, Iterator

from django.db import models
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.copy_text import json_fit
from backup_restore.plan import ModelPlan
from core.media_names import media_name_refusal

# What json_fit may change (a JSON field's values parsed as Decimal, inside a container or not).
_JSON_FIT = frozenset({Decimal, list, dict})


class RowChecks:
    """_Restorer's row checks (a mixin: it uses the restorer's schema)."""

    def _checked_rows(
        self, plan: ModelPlan, fields: list[models.Field], rows: Iterator[list], *,
        ncols: int, default_makers: list[Callable],
    ) -> Iterator[list]:
        """The section's rows, each with its defaults added, once it has the right length and a key."""
        label = plan.label
        pk_index = fields.index(plan.pk)
        json_indexes = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
        # Only the file's own columns: a default comes from the code, not from the upload.
        file_fields = [(i, f) for i, f in enumerate(fields[:ncols]) if isinstance(f, models.FileField)]
        for row in rows:
            if len(row) != ncols:
                pk = row[pk_index] if len(row) > pk_index and not isinstance(row[pk_index], (list, dict)) else None
                reason = _("La fila tiene %(count)s valores; se esperaban %(expected)s.") % {
                    "count": len(row), "expected": ncols}
                raise errors.InvalidRowError(details={"model": label, "pk": pk, "reason": reason})
            if row[pk_index] is None:
                raise errors.InvalidRowError(details={"model": label, "pk": None, "reason": _("La clave primaria es nula.")})
            for i, f in file_fields:
                self._media_name_check(plan, f, row[i], pk=row[pk_index])
            for i in json_indexes:
                row[i] = json_fit(row[i])
            if default_makers:
                row.extend(make() for make in default_makers)
            yield row

    def _checked_batches(
        self, plan: ModelPlan, fields: list[models.Field], batches: Iterator[list[list]], *,
        ncols: int, default_makers: list[Callable],
    ) -> Iterator[list[list]]:
        """The section's rows a block at a time, each checked as _checked_rows checks it.

        A block whose rows all have the right length and a key is checked by C code over
        its columns; any other (and a model with files, whose names are checked one by one)
        goes row by row, its rows before a refused one given first, as _checked_rows gives them.
        """
        pk_index = fields.index(plan.pk)
        json_indexes = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
        by_row = any(isinstance(f, models.FileField) for f in fields[:ncols])
        pk_of = operator.itemgetter(pk_index)
        for batch in batches:
            if by_row or set(map(len, batch)) != {ncols} or None in map(pk_of, batch):
                checked: list[list] = []
                try:
                    for row in self._checked_rows(plan, fields, iter(batch), ncols=ncols, default_makers=default_makers):
                        checked.append(row)
                except errors.RestoreError:
                    if checked:
                        yield checked
                    raise
                yield checked
                continue
            for i in json_indexes:
                for row in batch:
                    value = row[i]
                    if value.__class__ in _JSON_FIT:  # Decimals, and containers that may hold one
                        row[i] = json_fit(value)
            if default_makers:
                for row in batch:
                    row.extend([make() for make in default_makers])
            yield batch

    def _media_name_check(self, plan: ModelPlan, f: models.FileField, name: object, *, pk: object) -> None:
        """A file's name must lie under this clinic's prefix (core.media_names); the refusal names
        the reason, never the name, which may be forged to end up in a log line."""
        if name is None:  # the column's own NOT NULL refuses it, as for any other field
            return
        refusal = media_name_refusal(self.schema, name, max_length=f.max_length)
        if refusal is not None:
            raise errors.InvalidValueError(details={"model": plan.label, "pk": None if isinstance(pk, (list, dict)) else pk,
                                                    "field": f.attname, "reason": refusal.message, "name_refusal": refusal.value})
