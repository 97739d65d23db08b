"""The staging path of the JSON restore: rows into a jsonb staging table by COPY, then one
INSERT … SELECT … ON CONFLICT per model casts and writes them (step 4 of importer.py's map)."""
from __future__ import annotations

import io
import json
import logging
import re
from typing import Callable, Iterator

import psycopg2
from django.db import DatabaseError, connection, models, transaction
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.copy_text import json_dumps
from backup_restore.diagnosis import refused_batch_error
from backup_restore.plan import (
    STAGE, ModelPlan, qn,
)
from backup_restore.values import row_text_suspect

logger = logging.getLogger(__name__)

# A COPY batch ends at this many rows or this many characters of JSON, whichever comes first.
# A COPY batch ends at this many rows or this many characters of JSON, whichever comes first.
IMPORT_COPY_ROWS = 20_000
IMPORT_COPY_CHARS = 4 << 20
CHAR_TYPMOD = re.compile(r"^(varchar|character varying|char|character)\(\d+\)$")


class StagedWrite:
    """_Restorer's staging steps (a mixin: it uses the restorer's state)."""

    def _json_line(self, plan: ModelPlan, fields: list[models.Field], row: list) -> str:
        """The row as the staging table's JSON text, once it is known PostgreSQL can store it."""
        try:
            line = json_dumps(row)
        except ValueError:  # a number jsonb cannot hold
            line = None
        if line is None or row_text_suspect(line):
            line = self._storable_line(plan, fields, row, line)
        return line

    def _stage(
        self, plan: ModelPlan, fields: list[models.Field], rows: Iterator[list], *,
        ncols: int, default_makers: list[Callable],
    ) -> int:
        """COPY the section's rows, as jsonb arrays, into the emptied staging table; how many there were."""
        label = plan.label
        pk_index = fields.index(plan.pk)
        self.execute(f"TRUNCATE {STAGE}")
        raw = self.cursor.cursor
        total = 0
        buffer: list[str] = []
        size = 0
        for row in self._checked_rows(plan, fields, rows, ncols=ncols, default_makers=default_makers):
            line = self._json_line(plan, fields, row)
            buffer.append(line)
            size += len(line)
            if len(buffer) >= IMPORT_COPY_ROWS or size >= IMPORT_COPY_CHARS:
                self._copy(raw, buffer, plan, pk_index)
                total += len(buffer)
                buffer, size = [], 0
                if self.progress:
                    self.progress(label, total, None)
        if buffer:
            self._copy(raw, buffer, plan, pk_index)
            total += len(buffer)
        if self.progress:
            self.progress(label, total, None)
        return total

    # -- replace: straight into the emptied table

    def _copy(self, raw, lines: list[str], plan: ModelPlan, pk_index: int) -> None:
        self.background.wait()
        # COPY's text format: a backslash is an escape, so double JSON's own.
        data = ("\n".join(lines).replace("\\", "\\\\") + "\n").encode()
        try:
            with transaction.atomic():
                raw.copy_expert(f"COPY {STAGE} (j) FROM STDIN", io.BytesIO(data), size=1 << 20)
        except (DatabaseError, psycopg2.Error) as exc:
            # The raw cursor raises psycopg2's own errors. Its CONTEXT names the line of the batch.
            cause = exc.__cause__ if isinstance(exc, DatabaseError) else exc
            diag = getattr(cause, "diag", None)
            match = re.search(r"\bline (\d+)\b", getattr(diag, "context", None) or "")
            pk = None
            if match and 0 < int(match.group(1)) <= len(lines):
                pk = json.loads(lines[int(match.group(1)) - 1])[pk_index]
            reason = getattr(diag, "message_primary", None) or type(cause).__name__
            raise errors.InvalidValueError(details={"model": plan.label, "pk": pk, "reason": reason}) from None

    def _value_sql(self, f: models.Field, index: int) -> str:
        if isinstance(f, models.JSONField):
            expr = f"s.j->{index}"
            return f"NULLIF({expr}, 'null'::jsonb)" if f.null else expr
        # Cast to the base type: an explicit cast to varchar(n) would silently truncate,
        # while the assignment to the column refuses a value that is too long.
        db_type = CHAR_TYPMOD.sub("text", f.db_type(connection))
        expr = f"(s.j->>{index})::{db_type}"
        related = f.related_model if f.is_relation else None
        if related is not None and related not in self.restorable_models and f.null:
            # Users (and other rows a restore does not bring back): keep the id when it exists here.
            target = f"{self.table(related)}"
            key = qn(f.target_field.column)
            expr = f"(CASE WHEN EXISTS (SELECT 1 FROM {target} r WHERE r.{key} = {expr}) THEN {expr} END)"
        return expr

    def _check_required_references(self, plan: ModelPlan, fields: list[models.Field]) -> None:
        """A required key to a row a restore does not bring back (a user) must exist here already."""
        for index, f in enumerate(fields):
            related = f.related_model if f.is_relation else None
            if related is not None and related not in self.restorable_models and not f.null:
                row = self.execute(
                    f"SELECT s.j->>{fields.index(plan.pk)} FROM {STAGE} s WHERE s.j->>{index} IS NOT NULL AND NOT EXISTS "
                    f"(SELECT 1 FROM {self.table(related)} r WHERE r.{qn(f.target_field.column)}::text = s.j->>{index}) LIMIT 1"
                ).fetchone()
                if row:
                    reason = _("%(model)s no existe en esta clínica y el campo es obligatorio.") % {
                        "model": related._meta.verbose_name}
                    raise errors.DanglingForeignKeyError(
                        details={"model": plan.label, "pk": row[0], "field": f.attname, "reason": reason}
                    )

    def _write(self, plan: ModelPlan, fields: list[models.Field]) -> tuple[int, int, object]:
        """Upsert the staged rows into the model's table; (created, updated, the key of one row updated)."""
        self._unique_keys_added(plan)  # ON CONFLICT needs the key: a replace may have dropped it for the load
        self._check_required_references(plan, fields)
        columns = ", ".join(qn(f.column) for f in fields)
        values = ", ".join(self._value_sql(f, i) for i, f in enumerate(fields))
        updates = ", ".join(f"{qn(f.column)} = EXCLUDED.{qn(f.column)}" for f in fields if f is not plan.pk)
        conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        sql = (
            f"WITH written AS (INSERT INTO {self.table(plan)} ({columns}) SELECT {values} FROM {STAGE} s "
            f"ON CONFLICT ({qn(plan.pk.column)}) {conflict} RETURNING (xmax = 0) AS created, {qn(plan.pk.column)} AS pk) "
            "SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created), "
            "(array_agg(pk) FILTER (WHERE NOT created))[1] FROM written"
        )
        try:
            with transaction.atomic():
                return tuple(self.execute(sql).fetchone())
        except DatabaseError as exc:
            raise refused_batch_error(self.execute, plan, fields, exc) from None

    # -- finish
