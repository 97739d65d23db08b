"""The direct load of a `replace` restore: a model's rows by COPY straight into its emptied table
(step 4 of importer.py's map), each batch loaded while the next is read."""
from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING, Callable, Iterator

from django.db import models
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.background import execute_raw
from backup_restore.copy_text import CopyRows, NotCopyText, copy_in_savepoint, json_dumps
from backup_restore.diagnosis import dangling_keys_reported
from backup_restore.plan import (
    STAGE, ModelPlan, qn,
)
from backup_restore.staging import IMPORT_COPY_CHARS
from backup_restore.values import MAX_JSONB_BYTES, NUL_ESCAPE, too_big_refusal, value_refusal

if TYPE_CHECKING:
    from backup_restore.reader import SectionRows

logger = logging.getLogger(__name__)

# Loaded straight into a table, a batch is smaller: it is kept (as rows) until its COPY ends.
IMPORT_LOAD_ROWS = 5_000


class DirectLoad:
    """_Restorer's direct-load steps (a mixin: it uses the restorer's state and its staging path)."""

    def _load(
        self, plan: ModelPlan, fields: list[models.Field], rows: SectionRows, *,
        ncols: int, default_makers: list[Callable],
    ) -> tuple[int, int]:
        """A model's first section when replacing: COPY straight into its emptied table, as psql
        loads a pg_dump file, instead of through the staging table; (created, updated).

        The same rows are accepted and the same values stored (CopyRows writes each value as
        the staging path's `->>` reads it, and the column's own type reads it); a row it
        cannot write so sends its batch through the staging path. A batch PostgreSQL refuses
        is rolled back and loaded through the staging table, whose diagnosis names the row
        and the reason; a key already loaded from this section is refused there as repeated,
        as it is when the whole section is staged at once. Each batch's COPY runs while the
        next batch is read (Background).
        """
        copy_rows = CopyRows(fields)
        copy_sql = f"COPY {self.table(plan)} ({', '.join(qn(f.column) for f in fields)}) FROM STDIN"
        created = total = 0
        in_flight: tuple[list[list], Future | None] | None = None
        checked = self._checked_batches(plan, fields, rows.batches(), ncols=ncols, default_makers=default_makers)
        while batch := self._next_batch(checked, plan, fields, copy_rows):
            text = copy_rows.batch_text(batch)
            if text is None:
                text = self._lines_checked(plan, fields, copy_rows, batch)
            total += len(batch)
            created += self._settled(in_flight, plan, fields)
            in_flight = self._load_batch(copy_sql, plan, fields, batch, text, total)
        created += self._settled(in_flight, plan, fields)
        if self.progress:
            self.background.wait()
            self.progress(plan.label, total, None)
        if total:
            self._loaded_references(plan, fields)
            self._indexes_built(plan)
        return created, 0

    def _next_batch(self, checked: Iterator[list[list]], plan: ModelPlan, fields: list[models.Field],
                    copy_rows: "CopyRows") -> list[list]:
        """The next rows, the reader's blocks of them up to IMPORT_LOAD_ROWS or IMPORT_COPY_CHARS bytes of the file.

        A row refused while it is read is refused after the rows before it are checked, so
        the first refused row of the file is the one reported, as row by row.
        """
        batch: list[list] = []
        start = self.bytes_read()
        try:
            for block in checked:
                batch += block
                if len(batch) >= IMPORT_LOAD_ROWS or self.bytes_read() - start >= IMPORT_COPY_CHARS:
                    break
        except errors.RestoreError:
            self._lines_checked(plan, fields, copy_rows, batch)
            raise
        return batch

    def _lines_checked(self, plan: ModelPlan, fields: list[models.Field], copy_rows: "CopyRows",
                       batch: list[list]) -> str | None:
        """The batch row by row: each refused as the staging path refuses it; its COPY text, or
        None when a row needs the staging path."""
        lines: list[str] | None = []
        suspect_size = MAX_JSONB_BYTES // 4
        for row in batch:
            if lines is not None:
                try:
                    line = copy_rows.line(row)
                except NotCopyText:
                    lines = None  # this batch goes through the staging table
                else:
                    if NUL_ESCAPE in line or "\x00" in line or len(line) > suspect_size:
                        self._json_line(plan, fields, row)  # refuses what PostgreSQL cannot store, naming the field
                    lines.append(line)
                    continue
            self._json_line(plan, fields, row)
        return None if lines is None else "\n".join(lines) + "\n"

    def _load_batch(self, copy_sql: str, plan: ModelPlan, fields: list[models.Field], batch: list[list],
                    text: str | None, total: int) -> tuple[list[list], Future | None]:
        """Send a batch's COPY to the background (None: it needs the staging path); what is in flight."""
        if self.progress:  # the rows read, before this batch is written (as the staging path reports them)
            self.background.wait()
            self.progress(plan.label, total, None)
        if text is None:
            return batch, None
        return batch, self.background.submit(copy_in_savepoint, copy_sql, text.encode())

    def _settled(self, in_flight: tuple[list[list], Future | None] | None, plan: ModelPlan,
                 fields: list[models.Field]) -> int:
        """The rows a batch sent created, once its COPY ended; a refused batch goes through the staging table."""
        if in_flight is None:
            return 0
        batch, future = in_flight
        self.background.wait()
        if future is not None and future.result():
            return len(batch)
        return self._staged_batch(plan, fields, batch)

    def _indexes_built(self, plan: ModelPlan) -> None:
        """The table's dropped indexes, built in the background while the next section is read.

        CREATE INDEX refuses a table with foreign-key checks still queued (the keys to users,
        deferred): those are run first, as at the end of the restore, naming a row that
        points nowhere.
        """
        table = self.table(plan)
        kept_keys = [qn(name) for (name,) in self.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' AND condeferrable",
            [table]).fetchall()]
        if kept_keys:
            with dangling_keys_reported(self.execute, self.schema, self.restorable):
                self.execute(f"SET CONSTRAINTS {', '.join(f'{qn(self.schema)}.{name}' for name in kept_keys)} IMMEDIATE")
            self.execute(f"SET CONSTRAINTS {', '.join(f'{qn(self.schema)}.{name}' for name in kept_keys)} DEFERRED")
        for definition in self.constraints.take_indexes(table):
            self.background.submit(execute_raw, definition)

    def _staged_batch(self, plan: ModelPlan, fields: list[models.Field], batch: list[list]) -> int:
        """A batch through the staging table and its diagnosis; rows created."""
        self.execute(f"TRUNCATE {STAGE}")
        self._copy(self.cursor.cursor, [self._json_line(plan, fields, row) for row in batch], plan, fields.index(plan.pk))
        created, updated, updated_pk = self._write(plan, fields)
        if updated:  # a key an earlier batch of this section loaded: repeated, as the whole section staged says
            raise errors.DuplicatePrimaryKeyError(details={"model": plan.label, "pk": updated_pk, "reason": _(
                "La clave primaria aparece más de una vez.")})
        return created

    def _loaded_references(self, plan: ModelPlan, fields: list[models.Field]) -> None:
        """What _value_sql and _check_required_references do to staged rows, done to the loaded ones:
        a key to a row a restore does not bring back (a user) is kept only if it exists here."""
        for f in fields:
            related = f.related_model if f.is_relation else None
            if related is None or related in self.restorable_models:
                continue
            column, key = qn(f.column), qn(f.target_field.column)
            missing = f"{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {self.table(related)} r WHERE r.{key} = t.{column})"
            if f.null:
                self.execute(f"UPDATE {self.table(plan)} t SET {column} = NULL WHERE {missing}")
                continue
            row = self.execute(f"SELECT t.{qn(plan.pk.column)}::text FROM {self.table(plan)} t WHERE {missing} LIMIT 1").fetchone()
            if row:
                reason = _("%(model)s no existe en esta clínica y el campo es obligatorio.") % {
                    "model": related._meta.verbose_name}
                raise errors.DanglingForeignKeyError(
                    details={"model": plan.label, "pk": row[0], "field": f.attname, "reason": reason}
                )

    def _storable_line(self, plan: ModelPlan, fields: list[models.Field], row: list, line: str | None) -> str:
        """The row's JSON text once it is known PostgreSQL can store it; else refused, naming the field."""
        pk = row[fields.index(plan.pk)]
        for f, value in zip(fields, row):
            reason = value_refusal(value)
            if reason is not None:
                raise errors.InvalidValueError(details={"model": plan.label, "pk": pk, "field": f.attname, "reason": reason})
        if line is None:  # value_refusal finds every number the encoder refuses; refused all the same
            raise errors.InvalidValueError(details={"model": plan.label, "pk": pk, "reason": _(
                "El número está fuera del rango que PostgreSQL puede guardar.")})
        size = len(line.encode())
        if size > MAX_JSONB_BYTES:
            biggest = max(zip(fields, row), key=lambda pair: len(json_dumps(pair[1])))[0]
            raise errors.InvalidValueError(details={"model": plan.label, "pk": pk, "field": biggest.attname,
                                                    "reason": too_big_refusal(size)})
        return line  # a false alarm: text that only spells a backslash and "u0000"
