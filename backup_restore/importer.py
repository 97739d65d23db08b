"""Restore a JSON backup into the current clinic: all of it in one transaction, or nothing.

POST /api/restore/ reaches here through core/urls_tenant.py → backup_restore/urls.py →
views.TenantDataRestoreView (size, form, role) → services.tenant_data_restore (audit
entry, the clinic's operation lock) → tenant_data_import below:

1. Read and check the header (reader.BackupReader.header, _header_check): format,
   version, tenant, migrations the code knows, models the code knows. Nothing is
   written yet; a file from elsewhere or from newer code is refused here.
2. Open one transaction. Every error below rolls all of it back; a dry run rolls
   back on purpose at the end.
3. _Restorer.begin: a temporary staging table; the foreign keys between restored
   tables are dropped for the load (constraints.py says why). With replace, the
   restorable tables are emptied and their non-unique indexes dropped.
4. _Restorer.section, once per model in the file's order: its field names are
   matched to the model (unknown → refused; missing → default, null or refused);
   rows stream from the file by COPY into the staging table, then one
   INSERT … SELECT … ON CONFLICT (pk) DO UPDATE casts and writes them. When
   PostgreSQL refuses the statement, diagnosis.py names the row and the reason.
5. _Restorer.check_foreign_keys: queued checks fire, indexes are rebuilt, the
   dropped keys are added back; a key pointing nowhere refuses the restore,
   naming the row.
6. _Restorer.reset_sequences: each sequence moves past the largest key, never back.
7. Commit, and answer a RestoreResult: created, updated and deleted per model.

Memory stays bounded whatever the size of the file: rows are never all in Python.
"""
from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import BinaryIO, Callable, Iterator

from django.db import DatabaseError, connection, models, transaction
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.classification import Policy
from backup_restore.constraints import SuspendedConstraints
from backup_restore.diagnosis import pg_message, refused_batch_error
from backup_restore.plan import (
    FORMAT_NAME, FORMAT_VERSION, STAGE, ModelPlan, ProgressCallback, models_plan, qn, qualified_table,
)
from backup_restore.reader import BackupReader, open_backup_stream
from core.schemas import code_migrations

IMPORT_COPY_ROWS = 20_000
_CHAR_TYPMOD = re.compile(r"^(varchar|character varying|char|character)\(\d+\)$")


@dataclass
class ModelSummary:
    created: int = 0
    updated: int = 0
    deleted: int = 0

    def as_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "deleted": self.deleted}


@dataclass
class RestoreResult:
    replace: bool
    dry_run: bool
    tenant: str
    source_tenant: str
    models: dict[str, ModelSummary] = field(default_factory=dict)
    skipped_models: list[str] = field(default_factory=list)
    duration_ms: int = 0

    def as_dict(self) -> dict:
        return {
            "success": True,
            "replace": self.replace,
            "dry_run": self.dry_run,
            "models": {label: s.as_dict() for label, s in self.models.items()},
            "skipped_models": self.skipped_models,
            "duration_ms": self.duration_ms,
        }


def tenant_data_import(
    *,
    source: BinaryIO,
    schema_name: str,
    replace: bool = False,
    dry_run: bool = False,
    allow_other_tenant: bool = False,
    progress: ProgressCallback | None = None,
) -> RestoreResult:
    """Restore a backup file into the current clinic in one transaction; raises RestoreError and changes nothing."""
    started = time.monotonic()
    reader = BackupReader(open_backup_stream(source))
    header = reader.header()
    _header_check(header, schema_name=schema_name, allow_other_tenant=allow_other_tenant)
    declared = header.get("models")
    if isinstance(declared, dict):
        known = {p.label for p in models_plan()}
        unknown = [label for label in declared if label not in known]
        if unknown:
            raise errors.UnknownModelError(details={"model": unknown[0]})
    result = RestoreResult(
        replace=replace, dry_run=dry_run, tenant=schema_name, source_tenant=str((header.get("tenant") or {}).get("schema"))
    )
    with transaction.atomic():
        restorer = _Restorer(schema_name=schema_name, replace=replace, progress=progress)
        try:
            restorer.begin(result)
            for label, names, rows in reader.sections():
                restorer.section(label, names, rows, result)
            restorer.check_foreign_keys()
            restorer.reset_sequences()
        finally:
            restorer.cursor.close()
        if dry_run:
            transaction.set_rollback(True)
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _header_check(header: dict, *, schema_name: str, allow_other_tenant: bool) -> None:
    if header.get("format") != FORMAT_NAME:
        raise errors.WrongFormatError(details={"format": header.get("format"), "expected": FORMAT_NAME})
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise errors.UnsupportedVersionError(details={"version": version, "supported": [FORMAT_VERSION]})
    tenant = header.get("tenant") if isinstance(header.get("tenant"), dict) else {}
    if tenant.get("schema") != schema_name and not allow_other_tenant:
        raise errors.OtherTenantError(details={"file_tenant": tenant.get("schema"), "tenant": schema_name})
    migrations = header.get("migrations")
    if not isinstance(migrations, dict):
        raise errors.WrongFormatError(details={"reason": _("Falta `migrations` en la cabecera.")})
    known = code_migrations()
    # All of them, named as the SQL restore names them: one refusal tells what the code lacks.
    unknown = sorted(f"{app}.{name}" for app, name in migrations.items() if (app, name) not in known)
    if unknown:
        raise errors.MigrationsNewerError(details={"unknown_migrations": unknown})


def _json_fit(value):
    """Nested JSON (a JSONField's value): Decimal back to float, as Django's own decoder does."""
    if isinstance(value, Decimal):  # ijson gives Decimal only for non-integers
        return float(value)
    if isinstance(value, list):
        return [_json_fit(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_fit(v) for k, v in value.items()}
    return value


def _dumps_default(value):
    if isinstance(value, Decimal):  # exact: PostgreSQL casts the text
        return str(value)
    raise TypeError(type(value).__name__)


_dumps = json.JSONEncoder(default=_dumps_default, separators=(",", ":"), ensure_ascii=False).encode


class _Restorer:
    def __init__(self, *, schema_name: str, replace: bool, progress: ProgressCallback | None):
        self.schema = schema_name
        self.replace = replace
        self.progress = progress
        self.plans = {p.label: p for p in models_plan()}
        self.restorable = [p for p in self.plans.values() if p.policy is Policy.RESTORE]
        self.restorable_models = {p.model for p in self.restorable}
        self.cursor = connection.cursor()
        self.constraints = SuspendedConstraints(execute=self.execute, schema=schema_name, restorable=self.restorable)

    def table(self, plan_or_model) -> str:
        model = plan_or_model.model if isinstance(plan_or_model, ModelPlan) else plan_or_model
        return qualified_table(self.schema, model)

    def execute(self, sql: str, params=None):
        self.cursor.execute(sql, params)
        return self.cursor

    # -- setup

    def begin(self, summary: RestoreResult) -> None:
        # Fire checks queued earlier in this transaction (TRUNCATE refuses tables with pending events).
        self.execute("SET CONSTRAINTS ALL IMMEDIATE")
        self.execute("SET CONSTRAINTS ALL DEFERRED")
        self.execute(f"CREATE TEMP TABLE IF NOT EXISTS {STAGE.split('.')[1]} (j jsonb) ON COMMIT DROP")
        for plan in self.restorable:
            summary.models[plan.label] = ModelSummary()
        self.constraints.drop_foreign_keys()
        if not self.replace:
            return
        for plan in self.restorable:
            summary.models[plan.label].deleted = self.execute(f"SELECT count(*) FROM {self.table(plan)}").fetchone()[0]
        tables = ", ".join(self.table(p) for p in self.restorable)
        try:
            with transaction.atomic():
                self.execute(f"TRUNCATE {tables}")
        except DatabaseError:
            # Another (non-restored) table references one of ours: delete row by row, children first.
            for plan in reversed(self.restorable):
                self.execute(f"DELETE FROM {self.table(plan)}")
        self.constraints.drop_secondary_indexes()

    # -- one section

    def section(self, label: str, names: list, rows: Iterator[list], summary: RestoreResult) -> None:
        plan = self.plans.get(label) if isinstance(label, str) else None
        if plan is None:
            raise errors.UnknownModelError(details={"model": label})
        if plan.policy is not Policy.RESTORE:
            summary.skipped_models.append(label)
            return
        fields, default_makers = self._section_fields(plan, names)
        total = self._stage(plan, fields, rows, ncols=len(names), default_makers=default_makers)
        if total:
            created, updated = self._write(plan, fields)
            summary.models[label].created += created
            summary.models[label].updated += updated

    def _section_fields(self, plan: ModelPlan, names: list) -> tuple[list[models.Field], list[Callable]]:
        """The model's fields in the file's column order, then those the file lacks, with what fills them."""
        label = plan.label
        by_attname = {f.attname: f for f in plan.fields}
        by_attname.update({f.name: f for f in plan.fields if f.name not in by_attname})
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            reason = _("`fields` debe ser una lista de nombres únicos.")
            raise errors.WrongFormatError(details={"model": label, "reason": reason})
        unknown = [n for n in names if n not in by_attname]
        if unknown:
            raise errors.UnknownFieldError(details={"model": label, "field": unknown[0]})
        fields = [by_attname[n] for n in names]
        if plan.pk not in fields:
            raise errors.MissingFieldError(details={"model": label, "field": plan.pk.attname})
        # Fields the file does not carry (an older file): null, or their default, or refused.
        defaults = []
        for f in plan.fields:
            if f in fields:
                continue
            if f.has_default():
                defaults.append((f, f.get_default))
            elif f.null:
                defaults.append((f, lambda: None))
            else:
                raise errors.MissingFieldError(details={"model": label, "field": f.attname})
        return fields + [f for f, _maker in defaults], [maker for _field, maker in defaults]

    def _stage(
        self, plan: ModelPlan, fields: list[models.Field], rows: Iterator[list], *,
        ncols: int, default_makers: list[Callable],
    ) -> int:
        """COPY the section's rows, as jsonb arrays, into the emptied staging table; how many there were."""
        label = plan.label
        pk_index = fields.index(plan.pk)
        json_indexes = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
        self.execute(f"TRUNCATE {STAGE}")
        raw = self.cursor.cursor
        total = 0
        buffer: list[str] = []
        for row in rows:
            if len(row) != ncols:
                pk = row[pk_index] if len(row) > pk_index and not isinstance(row[pk_index], (list, dict)) else None
                reason = _("La fila tiene %(count)s valores; se esperaban %(expected)s.") % {
                    "count": len(row), "expected": ncols}
                raise errors.InvalidRowError(details={"model": label, "pk": pk, "reason": reason})
            if row[pk_index] is None:
                raise errors.InvalidRowError(details={"model": label, "pk": None, "reason": _("La clave primaria es nula.")})
            for i in json_indexes:
                row[i] = _json_fit(row[i])
            if default_makers:
                row.extend(make() for make in default_makers)
            buffer.append(_dumps(row))
            if len(buffer) >= IMPORT_COPY_ROWS:
                self._copy(raw, buffer)
                total += len(buffer)
                buffer = []
                if self.progress:
                    self.progress(label, total, None)
        if buffer:
            self._copy(raw, buffer)
            total += len(buffer)
        if self.progress:
            self.progress(label, total, None)
        return total

    def _copy(self, raw, lines: list[str]) -> None:
        # COPY's text format: a backslash is an escape, so double JSON's own.
        data = ("\n".join(lines).replace("\\", "\\\\") + "\n").encode()
        try:
            with transaction.atomic():
                raw.copy_expert(f"COPY {STAGE} (j) FROM STDIN", io.BytesIO(data), size=1 << 20)
        except DatabaseError as exc:
            raise errors.InvalidValueError(details={"reason": pg_message(exc)}) from None

    def _value_sql(self, f: models.Field, index: int) -> str:
        if isinstance(f, models.JSONField):
            expr = f"s.j->{index}"
            return f"NULLIF({expr}, 'null'::jsonb)" if f.null else expr
        # Cast to the base type: an explicit cast to varchar(n) would silently truncate,
        # while the assignment to the column refuses a value that is too long.
        db_type = _CHAR_TYPMOD.sub("text", f.db_type(connection))
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

    def _write(self, plan: ModelPlan, fields: list[models.Field]) -> tuple[int, int]:
        """Upsert the staged rows into the model's table; (created, updated)."""
        self._check_required_references(plan, fields)
        columns = ", ".join(qn(f.column) for f in fields)
        values = ", ".join(self._value_sql(f, i) for i, f in enumerate(fields))
        updates = ", ".join(f"{qn(f.column)} = EXCLUDED.{qn(f.column)}" for f in fields if f is not plan.pk)
        conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        sql = (
            f"WITH written AS (INSERT INTO {self.table(plan)} ({columns}) SELECT {values} FROM {STAGE} s "
            f"ON CONFLICT ({qn(plan.pk.column)}) {conflict} RETURNING (xmax = 0) AS created) "
            "SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM written"
        )
        try:
            with transaction.atomic():
                return tuple(self.execute(sql).fetchone())
        except DatabaseError as exc:
            raise refused_batch_error(self.execute, plan, fields, exc) from None

    # -- finish

    def check_foreign_keys(self) -> None:
        """Indexes built and keys added back; a key pointing nowhere refuses the restore, naming the row."""
        self.constraints.restore()

    def reset_sequences(self) -> None:
        """Move each sequence past the largest key; never back (a concurrent insert may hold a higher id)."""
        for plan in self.restorable:
            pk = plan.pk
            if not isinstance(pk, models.AutoField):  # Small/Big AutoField pass this check too
                continue
            (sequence,) = self.execute("SELECT pg_get_serial_sequence(%s, %s)", [self.table(plan), pk.column]).fetchone()
            if sequence is None:
                continue
            (top,) = self.execute(f"SELECT max({qn(pk.column)}) FROM {self.table(plan)}").fetchone()
            (last,) = self.execute("SELECT pg_sequence_last_value(%s::regclass)", [sequence]).fetchone()
            if top is not None and (last is None or top > last):
                self.execute("SELECT setval(%s::regclass, %s, true)", [sequence, top])
