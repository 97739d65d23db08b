"""The direct load of a `replace` restore: a model's rows by COPY straight into its emptied table
(step 4 of importer.py's map), each batch loaded while the next is read."""
from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING, Callable, Iterator

import psycopg2
from django.db import models
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.constraints import DroppedKey
from backup_restore.copy_text import CopyRows, NotCopyText, copy_in_savepoint, json_dumps
from backup_restore.diagnosis import dangling_keys_reported, first_repeat_sql, key_value, repeated_key_error
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
# COPY text sent ahead of the server, at most; its rows are kept too, some 3 times its size. On the
# million-row clinic 1 MiB ran 5% slower, and 4 to 16 MiB alike but for memory (peak 125 to 235 MB).
IMPORT_LOAD_AHEAD = 4 << 20
# The progress callback needs the connection free (it may use it): at the restore's first batch,
# then after so many rows whenever no COPY is in flight.
IMPORT_PROGRESS_ROWS = 100_000


class DirectLoad:
    """_Restorer's direct-load steps (a mixin: it uses the restorer's state and its staging path)."""

    # Set up by _Restorer: the batches and sections' ends sent to the background, in order, as
    # (plan, fields, rows or None for a section's end, future, bytes of COPY text), and those bytes.
    in_flight: "deque[tuple]"
    ahead: int
    reported: int | None = None  # rows loaded since the progress callback last heard (None: never)

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
        as it is when the whole section is staged at once. The COPYs run on the Background
        thread while the next batches are read, up to IMPORT_LOAD_AHEAD bytes of COPY text
        ahead: the server's work (a COPY, a table's indexes) and the parsing overlap on two
        cores, and neither waits for the other's slower moments.
        """
        copy_rows = CopyRows(fields)
        copy_sql = f"COPY {self.table(plan)} ({', '.join(qn(f.column) for f in fields)}) FROM STDIN"
        total = 0
        checked = _pieces(self._checked_batches(plan, fields, rows.batches(), ncols=ncols, default_makers=default_makers),
                          IMPORT_LOAD_ROWS)
        try:
            while batch := self._next_batch(checked, plan, fields, copy_rows):
                text = copy_rows.batch_text(batch)
                if text is None:
                    text = self._lines_checked(plan, fields, copy_rows, batch)
                total += len(batch)
                self._progress_reported(plan, total, len(batch))
                self._sent(plan, fields, batch, text, copy_sql)
        except errors.RestoreError:
            # A row refused later in the file: a batch sent before it that PostgreSQL refused, or a
            # key it repeated, is reported instead, as it would have been reading one batch at a time.
            self.settle_all()
            self._repeated_values_refused(plan, self.constraints.unique_keys_missing(self.table(plan)))
            raise
        if total:
            self._finish_sent(plan, fields)
        return 0, 0  # the rows created are counted as their COPYs are settled

    def _progress_reported(self, plan: ModelPlan, total: int, size: int) -> None:
        """The rows read, before this batch is written (as the staging path reports them), once the
        connection is free (the callback may use it): waiting for it would stall the server's queue."""
        if not self.progress:
            return
        if self.reported is None or self.reported >= IMPORT_PROGRESS_ROWS and self.background.idle():
            self.reported = 0
            self.background.wait()
            self.progress(plan.label, total, None)
        self.reported += size

    def _sent(self, plan: ModelPlan, fields: list[models.Field], batch: list[list], text: str | None, copy_sql: str) -> None:
        """A batch's COPY sent to the background (text None: it needs the staging path); the oldest
        sent settled while more than IMPORT_LOAD_AHEAD bytes are in flight."""
        future, size = None, 0
        if text is not None:
            data = text.encode()
            future, size = self.background.submit(copy_in_savepoint, copy_sql, data), len(data)
        self.in_flight.append((plan, fields, batch, future, size))
        self.ahead += size
        # A batch for the staging path waits for those before it: the staging table is on this thread.
        while self.in_flight and (self.ahead > IMPORT_LOAD_AHEAD or future is None):
            self._settle_oldest()

    def settle_all(self) -> None:
        """Every COPY and section's end in flight settled, in the order sent."""
        while self.in_flight:
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        """The oldest batch in flight, once its COPY ended (a refused one goes through the staging
        table), or the oldest section's end (_finish_checked)."""
        plan, fields, batch, future, size = self.in_flight.popleft()
        self.ahead -= size
        if batch is None:
            self._finish_checked(plan, fields, future)
            return
        if future is not None and self.background.result(future):
            created = len(batch)
        else:
            created = self._staged_batch(plan, fields, batch)
        self.summary.models[plan.label].created += created

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

    def _finish_sent(self, plan: ModelPlan, fields: list[models.Field]) -> None:
        """A loaded table's end sent to the background, after its COPYs, while the next section is
        read: its keys to users (_reference_sql), the checks queued for them, its dropped indexes."""
        updates, checks = self._reference_sql(plan, fields)
        table = self.table(plan)
        self.loaded_tables.add(table)
        future = self.background.submit(finish_load, table, self.schema, self.constraints.take_unique_keys(table), updates,
                                        checks, self.constraints.take_indexes(table), self.constraints.keys_ready(self.loaded_tables))
        self.in_flight.append((plan, fields, None, future, 0))

    def _finish_checked(self, plan: ModelPlan, fields: list[models.Field], future: Future) -> None:
        """A table's end, once the background ran it; what it found wrong is done again here,
        where the refusal is diagnosed and names the row (it stopped before the indexes)."""
        indexes, keys_left = self.background.result(future)
        self.constraints.give_back(keys_left)
        if indexes is None:
            return
        missing = self.constraints.unique_keys_missing(self.table(plan))  # a staged batch may have built them
        self._repeated_values_refused(plan, missing)
        self._loaded_references(plan, fields)
        self._indexes_built(plan, [key.statement for key in missing] + indexes)

    def _unique_keys_added(self, plan: ModelPlan) -> None:
        """The table's primary key and unique constraints, if the load dropped them, built back now
        (an ON CONFLICT needs the key; a unique value repeated is then reported as the staging path does)."""
        missing = self.constraints.unique_keys_missing(self.table(plan))
        if missing:
            self._repeated_values_refused(plan, missing)
            self._indexes_built(plan, [key.statement for key in missing])

    def _repeated_values_refused(self, plan: ModelPlan, keys: list[DroppedKey]) -> None:
        """A key or unique value the loaded rows repeat refuses the restore, naming the first row, in
        the file's order, that repeats one: as the load would have, had the keys been there."""
        found = []
        for key in keys:
            columns = [f"t.{qn(column)}" for column in key.columns]
            row = self.execute(first_repeat_sql(self.table(plan), f"t.{qn(plan.pk.column)}", columns)).fetchone()
            if row:
                found.append(((row[0], row[1]), key, row[2], row[3:]))
        if not found:
            return
        # One row may repeat several (a whole row copied): its key is the one named, as the staging path's ON CONFLICT does.
        _position, key, pk, values = min(found, key=lambda item: (item[0], not item[1].primary))
        pk = key_value(plan, pk)
        if key.primary:
            raise repeated_key_error(plan, pk)
        field = next((f for f in plan.fields if f.column == key.columns[0]), None)
        raise errors.UniqueViolationError(details={
            "model": plan.label, "pk": pk, "field": field.attname if field else key.columns[0],
            "reason": _("(%(columns)s)=(%(values)s) aparece más de una vez.") % {
                "columns": ", ".join(key.columns), "values": ", ".join(values)},
        })

    def _indexes_built(self, plan: ModelPlan, definitions: list[str]) -> None:
        """The table's foreign-key checks still queued (the keys to users, deferred), then its
        dropped indexes (its primary key among them): CREATE INDEX refuses a table with checks queued.
        A key pointing nowhere refuses the restore, naming the row, as at the end of the restore."""
        kept_keys = [qn(name) for (name,) in self.execute(_KEPT_KEYS_SQL, [self.table(plan)]).fetchall()]
        if kept_keys:
            with dangling_keys_reported(self.execute, self.schema, self.restorable):
                self.execute(f"SET CONSTRAINTS {', '.join(f'{qn(self.schema)}.{name}' for name in kept_keys)} IMMEDIATE")
            self.execute(f"SET CONSTRAINTS {', '.join(f'{qn(self.schema)}.{name}' for name in kept_keys)} DEFERRED")
        for definition in definitions:
            self.execute(definition)

    def _staged_batch(self, plan: ModelPlan, fields: list[models.Field], batch: list[list]) -> int:
        """A batch through the staging table and its diagnosis; rows created."""
        self.execute(f"TRUNCATE {STAGE}")
        self._copy(self.cursor.cursor, [self._json_line(plan, fields, row) for row in batch], plan, fields.index(plan.pk))
        created, updated, updated_pk = self._write(plan, fields)
        if updated:  # a key an earlier batch of this section loaded: repeated, as the whole section staged says
            raise repeated_key_error(plan, updated_pk)
        return created

    def _reference_sql(self, plan: ModelPlan, fields: list[models.Field]) -> tuple[list[str], list[tuple[str, models.Field]]]:
        """What _value_sql and _check_required_references do to staged rows, for the loaded ones:
        a key to a row a restore does not bring back (a user) is kept only if it exists here.
        The UPDATEs that empty a nullable one, and the SELECTs that find a required one missing."""
        updates, checks = [], []
        for f in fields:
            related = f.related_model if f.is_relation else None
            if related is None or related in self.restorable_models:
                continue
            column, key = qn(f.column), qn(f.target_field.column)
            missing = f"{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {self.table(related)} r WHERE r.{key} = t.{column})"
            if f.null:
                updates.append(f"UPDATE {self.table(plan)} t SET {column} = NULL WHERE {missing}")
            else:
                checks.append((f"SELECT t.{qn(plan.pk.column)}::text FROM {self.table(plan)} t WHERE {missing} LIMIT 1", f))
        return updates, checks

    def _loaded_references(self, plan: ModelPlan, fields: list[models.Field]) -> None:
        """_reference_sql run here: a required key to a user missing here refuses the restore, naming the row."""
        updates, checks = self._reference_sql(plan, fields)
        for sql in updates:
            self.execute(sql)
        for sql, f in checks:
            row = self.execute(sql).fetchone()
            if row:
                reason = _("%(model)s no existe en esta clínica y el campo es obligatorio.") % {
                    "model": f.related_model._meta.verbose_name}
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


_KEPT_KEYS_SQL = "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' AND condeferrable"


def finish_load(raw, table: str, schema: str, unique_keys: list[str], updates: list[str],
                checks: list[tuple[str, models.Field]], indexes: list[str],
                keys: list[str]) -> tuple[list[str] | None, list[str]]:
    """DirectLoad._finish_sent's statements, on the background thread: (None, keys not added) once
    all ran; else (the indexes left to build, the keys), for _finish_checked to run it all again
    (the primary and unique keys too, if they are not built) where a refusal is diagnosed. Each key is added in a
    savepoint of its own; one that fails is left to the end of the restore
    (SuspendedConstraints.restore), which names the row."""
    with raw.cursor() as cursor:
        for sql in updates:
            cursor.execute(sql)
        for sql, _field in checks:
            cursor.execute(sql)
            if cursor.fetchone():
                return indexes, keys
        cursor.execute(_KEPT_KEYS_SQL, [table])
        kept = ", ".join(f"{qn(schema)}.{qn(name)}" for (name,) in cursor.fetchall())
        if kept:
            # Once rolled back the checks stay queued: _finish_checked runs them.
            if not _in_savepoint(cursor, f"SET CONSTRAINTS {kept} IMMEDIATE", refusal=psycopg2.IntegrityError):
                return indexes, keys
            cursor.execute(f"SET CONSTRAINTS {kept} DEFERRED")
        # After the checks queued: ALTER TABLE refuses a table with any. A repeated value fails it.
        if not all(_in_savepoint(cursor, statement) for statement in unique_keys):
            return indexes, keys
        for definition in indexes:
            cursor.execute(definition)
        # A row pointing nowhere, or a table with checks queued.
        left = [statement for statement in keys if not _in_savepoint(cursor, statement)]
    return None, left


def _in_savepoint(cursor, statement: str, refusal: type[Exception] = psycopg2.Error) -> bool:
    """Whether the statement ran, in a savepoint of its own; if PostgreSQL refused it, nothing of it is left."""
    cursor.execute("SAVEPOINT backup_restore_load")
    try:
        cursor.execute(statement)
        ran = True
    except refusal:
        cursor.execute("ROLLBACK TO SAVEPOINT backup_restore_load")
        ran = False
    cursor.execute("RELEASE SAVEPOINT backup_restore_load")
    return ran


def _pieces(blocks: Iterator[list[list]], size: int) -> Iterator[list[list]]:
    """The reader's blocks cut to at most `size` rows: a batch holds no more than IMPORT_LOAD_ROWS
    (whose rows PostgreSQL refuses together) whatever the reader's block."""
    for block in blocks:
        if len(block) <= size:
            yield block
        else:
            for start in range(0, len(block), size):
                yield block[start : start + size]

