"""The JSON export and import of one clinic's data (seed 004's `utils.py`).

Export: PostgreSQL renders each row as a JSON array (`json_build_array`), read
through a server-side cursor in one REPEATABLE READ snapshot; Python only joins
lines. Import: ijson (C backend) parses the upload as a stream, each row goes
to a temporary `jsonb` staging table by COPY, and one
`INSERT … SELECT … ON CONFLICT (pk) DO UPDATE` per model casts and writes them.
PostgreSQL does the type checks; when it refuses a batch, a diagnostic query
finds the row to name. Memory stays bounded whatever the size of the clinic.
The file format is documented in README ("Formato del respaldo JSON").
"""
from __future__ import annotations

import gzip
import io
import json
import re
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, BinaryIO, Callable, Iterator

import ijson
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone

from backup_restore import errors
from backup_restore.classification import Policy, exported_fields, model_classification, tenant_models
from core.schemas import code_migrations
from core.selectors import migration_state

try:  # the C backend is several times faster; fall back to whatever ijson picked
    _ijson = ijson.get_backend("yajl2_c")
except Exception:  # pragma: no cover
    _ijson = ijson

FORMAT_NAME = "clinica-tenant-data"
FORMAT_VERSION = 1
EXPORT_FETCH_ROWS = 10_000
EXPORT_FLUSH_CHARS = 1 << 20
IMPORT_COPY_ROWS = 20_000
PARSE_BUFFER = 1 << 18
GZIP_LEVEL = 3
STAGE = "pg_temp._backup_restore_stage"
_CHAR_TYPMOD = re.compile(r"^(varchar|character varying|char|character)\(\d+\)$")

ProgressCallback = Callable[[str, int, int | None], None]


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ModelPlan:
    model: type[models.Model]
    label: str
    policy: Policy
    reason: str
    fields: tuple[models.Field, ...]

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def pk(self) -> models.Field:
        return self.model._meta.pk


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _dependencies(model: type[models.Model], candidates: set) -> set:
    deps = set()
    for f in model._meta.local_concrete_fields:
        related = f.related_model if f.is_relation else None
        if related is not None and related is not model and related in candidates:
            deps.add(related)
    return deps


def models_plan() -> list[ModelPlan]:
    """Every tenant model, classified, in foreign-key dependency order (cycles broken by label)."""
    all_models = sorted(tenant_models(), key=lambda m: m._meta.label_lower)
    candidates = set(all_models)
    pending = {m: _dependencies(m, candidates) for m in all_models}
    ordered: list[type[models.Model]] = []
    while pending:
        ready = [m for m in pending if not (pending[m] - set(ordered))]
        if not ready:  # a cycle: deferred constraints make any order valid
            ready = [next(iter(pending))]
        for m in ready:
            ordered.append(m)
            del pending[m]
    plans = []
    for m in ordered:
        c = model_classification(m)
        plans.append(ModelPlan(m, m._meta.label_lower, c.policy, c.reason, tuple(exported_fields(m))))
    return plans


_INPUT_IS_VALID_FUNCTION = r"""
CREATE OR REPLACE FUNCTION pg_temp.input_is_valid(value text, type_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    -- An explicit cast to varchar(n) truncates instead of failing, so lengths are compared.
    IF type_name ~ '^varchar\(\d+\)$' THEN
        RETURN length(value) <= substring(type_name FROM '\((\d+)\)')::int;
    END IF;
    EXECUTE format('SELECT %L::%s', value, type_name);
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END
$$
"""


# --------------------------------------------------------------------------- export


def _row_json_sql(schema_name: str, plan: ModelPlan) -> str:
    columns = [f"t.{_qn(f.column)}" for f in plan.fields]
    if len(columns) <= 100:  # a function takes at most 100 arguments
        expression = f"json_build_array({', '.join(columns)})::text"
    else:
        parts = ", ".join(f"coalesce(to_json({c})::text, 'null')" for c in columns)
        expression = f"'[' || array_to_string(ARRAY[{parts}], ',') || ']'"
    return (
        f"SELECT {expression} FROM {_qn(schema_name)}.{_qn(plan.table)} t ORDER BY t.{_qn(plan.pk.column)}"
    )


def tenant_data_export_chunks(
    *, schema_name: str, tenant_name: str, progress: ProgressCallback | None = None, stats: dict | None = None
) -> Iterator[bytes]:
    """The clinic's data as UTF-8 JSON, in chunks, from one consistent snapshot."""
    plans = [p for p in models_plan() if p.policy is not Policy.EXCLUDED]
    excluded = {p.label: p.reason for p in models_plan() if p.policy is Policy.EXCLUDED}
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            if outermost:  # counts and rows from the same snapshot
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            counts = {}
            for plan in list(plans):
                cursor.execute("SELECT to_regclass(%s)", [f"{_qn(schema_name)}.{_qn(plan.table)}"])
                if cursor.fetchone()[0] is None:  # a migration not applied to this schema yet
                    plans.remove(plan)
                    excluded[plan.label] = "La tabla no existe en esta clínica (migración pendiente)."
                    continue
                cursor.execute(f"SELECT count(*) FROM {_qn(schema_name)}.{_qn(plan.table)}")
                counts[plan.label] = cursor.fetchone()[0]
        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "tenant": {"schema": schema_name, "name": tenant_name},
            "created_at": timezone.now().isoformat(),
            "migrations": migration_state(),
            "models": {p.label: {"count": counts[p.label], "restore": p.policy is Policy.RESTORE} for p in plans},
            "excluded": excluded,
        }
        head = json.dumps(header, ensure_ascii=False, indent=1)
        yield (head[:-2] + ',\n "data": [').encode()
        raw = connection.connection  # psycopg2: a named cursor is a server-side cursor
        written = 0
        for index, plan in enumerate(plans):
            section = {"model": plan.label, "fields": [f.attname for f in plan.fields]}
            buffer = [("\n" if index == 0 else ",\n") + json.dumps(section, ensure_ascii=False)[:-1] + ', "rows": [']
            size = 0
            rows_done = 0
            first = True
            with raw.cursor(name=f"backup_restore_export_{index}") as named:
                named.itersize = EXPORT_FETCH_ROWS
                named.execute(_row_json_sql(schema_name, plan))
                while True:
                    batch = named.fetchmany(EXPORT_FETCH_ROWS)
                    if not batch:
                        break
                    text = ",\n".join([r[0] for r in batch])
                    buffer.append(("\n" if first else ",\n") + text)
                    first = False
                    size += len(text)
                    rows_done += len(batch)
                    if size >= EXPORT_FLUSH_CHARS:
                        chunk = "".join(buffer).encode()
                        written += len(chunk)
                        yield chunk
                        buffer, size = [], 0
                        if progress:
                            progress(plan.label, rows_done, counts[plan.label])
            buffer.append("]}")
            chunk = "".join(buffer).encode()
            written += len(chunk)
            yield chunk
            if progress:
                progress(plan.label, rows_done, counts[plan.label])
            if stats is not None:
                stats.setdefault("models", {})[plan.label] = rows_done
        yield b"\n]}\n"
    if stats is not None:
        stats["bytes"] = written


def gzip_chunks(chunks: Iterator[bytes], level: int = GZIP_LEVEL) -> Iterator[bytes]:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


# --------------------------------------------------------------------------- reading a file


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
            raise errors.InvalidJSONError(details={"reason": "El archivo termina antes de tiempo."}) from None
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details={"reason": _reason(exc)}) from None

    def _value(self, event=None, value=None):
        if event is None:
            event, value = self._next()
        if event in _SCALARS:
            return value
        if event not in ("start_map", "start_array"):
            raise errors.WrongFormatError(details={"reason": f"Evento JSON inesperado: {event}"})
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
        event, _ = self._next()
        if event != "start_map":
            raise errors.WrongFormatError(details={"reason": "El archivo no es un objeto JSON."})
        header: dict[str, Any] = {}
        while True:
            event, key = self._next()
            if event == "end_map":
                raise errors.WrongFormatError(details={"reason": "El archivo no tiene la clave `data`."})
            if key == "data":
                break
            header[key] = self._value()
        event, _ = self._next()
        if event != "start_array":
            raise errors.WrongFormatError(details={"reason": "`data` debe ser una lista."})
        return header

    def sections(self) -> Iterator[tuple[str, list[str], Iterator[list]]]:
        """(model label, field names, rows); each section's rows must be consumed before the next."""
        while True:
            event, _ = self._next()
            if event == "end_array":
                break
            if event != "start_map":
                raise errors.WrongFormatError(details={"reason": "Cada sección de `data` debe ser un objeto."})
            label, names = None, None
            while True:
                event, key = self._next()
                if event == "end_map":
                    break
                if key == "rows":
                    if not isinstance(label, str) or not isinstance(names, list):
                        raise errors.WrongFormatError(
                            details={"reason": "Una sección debe declarar `model` y `fields` antes de `rows`."}
                        )
                    event, _ = self._next()
                    if event != "start_array":
                        raise errors.WrongFormatError(details={"model": label, "reason": "`rows` debe ser una lista."})
                    rows = self._rows(label)
                    yield label, names, rows
                    for _ in rows:  # drain what the consumer left
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
                            raise errors.WrongFormatError(details={"model": label, "reason": "Fila mal formada."})
                    yield row
                elif event == "end_array":
                    return
                else:
                    raise errors.InvalidRowError(
                        details={"model": label, "pk": None, "reason": "Cada fila debe ser una lista de valores."}
                    )
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details={"model": label, "reason": _reason(exc)}) from None
        raise errors.InvalidJSONError(details={"model": label, "reason": "El archivo termina antes de tiempo."})


# --------------------------------------------------------------------------- restore


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
        raise errors.WrongFormatError(details={"reason": "Falta `migrations` en la cabecera."})
    known = code_migrations()
    for app, name in migrations.items():
        if (app, name) not in known:
            raise errors.MigrationsNewerError(details={"app": app, "migration": name})


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
        self.suspended_foreign_keys: list[tuple[str, str, str]] = []
        self.suspended_indexes: list[tuple[str, str]] = []

    def table(self, plan_or_model) -> str:
        model = plan_or_model.model if isinstance(plan_or_model, ModelPlan) else plan_or_model
        return f"{_qn(self.schema)}.{_qn(model._meta.db_table)}"

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
        self._suspend_foreign_keys()
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
        self._suspend_secondary_indexes()

    def _suspend_secondary_indexes(self) -> None:
        """With the tables emptied, drop their non-unique indexes; check_foreign_keys builds them again.

        One build over the loaded rows is cheaper than updating every index on every
        insert. Unique indexes stay: they are what reports a repeated key.
        """
        tables = [self.table(plan) for plan in self.restorable]
        self.suspended_indexes = self.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisunique AND NOT i.indisprimary "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            [tables],
        ).fetchall()
        for index, _definition in self.suspended_indexes:
            self.execute(f"DROP INDEX {_qualified(self.schema, index)}")

    # -- one section

    def section(self, label: str, names: list, rows: Iterator[list], summary: RestoreResult) -> None:
        plan = self.plans.get(label) if isinstance(label, str) else None
        if plan is None:
            raise errors.UnknownModelError(details={"model": label})
        if plan.policy is not Policy.RESTORE:
            summary.skipped_models.append(label)
            return
        by_attname = {f.attname: f for f in plan.fields}
        by_attname.update({f.name: f for f in plan.fields if f.name not in by_attname})
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise errors.WrongFormatError(details={"model": label, "reason": "`fields` debe ser una lista de nombres únicos."})
        unknown = [n for n in names if n not in by_attname]
        if unknown:
            raise errors.UnknownFieldError(details={"model": label, "field": unknown[0]})
        fields = [by_attname[n] for n in names]
        if plan.pk not in fields:
            raise errors.MissingFieldError(details={"model": label, "field": plan.pk.attname})
        # Fields the file does not carry (an older file): null, or their default, or refused.
        missing = [f for f in plan.fields if f not in fields]
        defaults = []
        for f in missing:
            if f.has_default():
                defaults.append((f, f.get_default))
            elif f.null:
                defaults.append((f, lambda: None))
            else:
                raise errors.MissingFieldError(details={"model": label, "field": f.attname})
        fields += [f for f, _ in defaults]
        default_makers = [maker for _, maker in defaults]
        ncols = len(names)
        pk_index = fields.index(plan.pk)
        json_indexes = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]

        self.execute(f"TRUNCATE {STAGE}")
        raw = self.cursor.cursor
        total = 0
        buffer: list[str] = []
        for row in rows:
            if len(row) != ncols:
                pk = row[pk_index] if len(row) > pk_index and not isinstance(row[pk_index], (list, dict)) else None
                raise errors.InvalidRowError(
                    details={"model": label, "pk": pk, "reason": f"La fila tiene {len(row)} valores; se esperaban {ncols}."}
                )
            if row[pk_index] is None:
                raise errors.InvalidRowError(details={"model": label, "pk": None, "reason": "La clave primaria es nula."})
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
        if total:
            created, updated = self._write(plan, fields)
            summary.models[label].created += created
            summary.models[label].updated += updated

    def _copy(self, raw, lines: list[str]) -> None:
        # COPY's text format: a backslash is an escape, so double JSON's own.
        data = ("\n".join(lines).replace("\\", "\\\\") + "\n").encode()
        try:
            with transaction.atomic():
                raw.copy_expert(f"COPY {STAGE} (j) FROM STDIN", io.BytesIO(data), size=1 << 20)
        except DatabaseError as exc:
            raise errors.InvalidValueError(details={"reason": _pg_message(exc)}) from None

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
            key = _qn(f.target_field.column)
            expr = f"(CASE WHEN EXISTS (SELECT 1 FROM {target} r WHERE r.{key} = {expr}) THEN {expr} END)"
        return expr

    def _write(self, plan: ModelPlan, fields: list[models.Field]) -> tuple[int, int]:
        label = plan.label
        for index, f in enumerate(fields):
            related = f.related_model if f.is_relation else None
            if related is not None and related not in self.restorable_models and not f.null:
                row = self.execute(
                    f"SELECT s.j->>{fields.index(plan.pk)} FROM {STAGE} s WHERE s.j->>{index} IS NOT NULL AND NOT EXISTS "
                    f"(SELECT 1 FROM {self.table(related)} r WHERE r.{_qn(f.target_field.column)}::text = s.j->>{index}) LIMIT 1"
                ).fetchone()
                if row:
                    raise errors.DanglingForeignKeyError(
                        details={"model": label, "pk": row[0], "field": f.attname,
                                 "reason": f"{related._meta.verbose_name} no existe en esta clínica y el campo es obligatorio."}
                    )
        columns = ", ".join(_qn(f.column) for f in fields)
        values = ", ".join(self._value_sql(f, i) for i, f in enumerate(fields))
        updates = ", ".join(f"{_qn(f.column)} = EXCLUDED.{_qn(f.column)}" for f in fields if f is not plan.pk)
        conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        sql = (
            f"WITH written AS (INSERT INTO {self.table(plan)} ({columns}) SELECT {values} FROM {STAGE} s "
            f"ON CONFLICT ({_qn(plan.pk.column)}) {conflict} RETURNING (xmax = 0) AS created) "
            "SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM written"
        )
        try:
            with transaction.atomic():
                return tuple(self.execute(sql).fetchone())
        except DatabaseError as exc:
            raise self._diagnose(plan, fields, exc) from None

    def _diagnose(self, plan: ModelPlan, fields: list[models.Field], exc: DatabaseError) -> errors.RestoreError:
        """Which row PostgreSQL refused, and why."""
        error = self._diagnose_error(plan, fields, exc)
        pk = error.details.get("pk")
        if isinstance(pk, str):
            try:
                error.details["pk"] = int(pk) if isinstance(plan.pk, (models.AutoField, models.IntegerField)) else pk
            except ValueError:
                pass
        return error

    def _diagnose_error(self, plan: ModelPlan, fields: list[models.Field], exc: DatabaseError) -> errors.RestoreError:
        cause = exc.__cause__
        pgcode = getattr(cause, "pgcode", "") or ""
        diag = getattr(cause, "diag", None)
        pk_index = fields.index(plan.pk)
        base = {"model": plan.label, "pk": None, "reason": _pg_message(exc)}
        if pgcode == "21000":  # ON CONFLICT touched a row twice: a repeated primary key
            row = self.execute(
                f"SELECT s.j->>{pk_index} FROM {STAGE} s GROUP BY 1 HAVING count(*) > 1 LIMIT 1"
            ).fetchone()
            return errors.DuplicatePrimaryKeyError(details={**base, "pk": row[0] if row else None,
                                                             "reason": "La clave primaria aparece más de una vez."})
        if pgcode == "23502" and diag is not None:  # not null
            f = next((f for f in fields if f.column == diag.column_name), None)
            if f is not None:
                i = fields.index(f)
                row = self.execute(
                    f"SELECT s.j->>{pk_index} FROM {STAGE} s WHERE s.j->>{i} IS NULL LIMIT 1"
                ).fetchone()
                return errors.MissingFieldError(details={**base, "pk": row[0] if row else None, "field": f.attname,
                                                         "reason": "Valor obligatorio nulo."})
        if pgcode == "23505":  # unique
            details = {**base, "reason": (diag.message_detail if diag else None) or base["reason"]}
            match = re.match(r"Key \(([^,()]+)\)=\((.*)\) already exists", (diag.message_detail or "") if diag else "")
            f = next((f for f in fields if match and f.column == match.group(1).strip('"')), None)
            if f is not None:
                details["field"] = f.attname
                pks = [r[0] for r in self.execute(
                    f"SELECT s.j->>{pk_index} FROM {STAGE} s WHERE s.j->>{fields.index(f)} = %s ORDER BY s.ctid LIMIT 2",
                    [match.group(2)],
                ).fetchall()]
                # the row that collided is the later one (or the only one, against a row already here)
                details["pk"] = pks[-1] if pks else None
            return errors.UniqueViolationError(details=details)
        if pgcode.startswith("23"):
            return errors.ConstraintViolationError(details={**base, "constraint": getattr(diag, "constraint_name", None)})
        if pgcode.startswith("22"):
            validator = "pg_input_is_valid"
            if connection.pg_version < 160000:
                # pg_input_is_valid arrived in PostgreSQL 16; before it, a function of our own
                # (in pg_temp: it disappears with the session) does the same for diagnosis.
                self.execute(_INPUT_IS_VALID_FUNCTION)
                validator = "pg_temp.input_is_valid"
            for i, f in enumerate(fields):
                if isinstance(f, models.JSONField):
                    continue
                db_type = f.db_type(connection)
                row = self.execute(
                    f"SELECT s.j->>{pk_index}, s.j->>{i} FROM {STAGE} s "
                    f"WHERE s.j->>{i} IS NOT NULL AND NOT {validator}(s.j->>{i}, %s) LIMIT 1",
                    [db_type],
                ).fetchone()
                if row:
                    return errors.InvalidValueError(details={
                        **base, "pk": row[0], "field": f.attname,
                        "reason": f"Valor {row[1][:80]!r} no válido para {f.get_internal_type()} ({db_type}).",
                    })
        return errors.InvalidValueError(details=base)

    # -- finish

    def _suspend_foreign_keys(self) -> None:
        """Drop the foreign keys between restored tables for the load; check_foreign_keys adds them back.

        Checked row by row, a million rows queue a million trigger events; added back,
        each key is validated by one join, as psql does with a pg_dump file. Only keys
        between restored tables: dropping one that points at the users table would lock
        that table, and every request of the clinic with it, for the whole restore.
        """
        tables = [self.table(plan) for plan in self.restorable]
        self.suspended_foreign_keys = self.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.conrelid = ANY(%s::regclass[]) AND c.confrelid = ANY(%s::regclass[])",
            [tables, tables],
        ).fetchall()
        for table, name, _definition in self.suspended_foreign_keys:
            self.execute(f"ALTER TABLE {_qualified(self.schema, table)} DROP CONSTRAINT {_qn(name)}")

    def check_foreign_keys(self) -> None:
        """Run the checks still queued (keys to users), rebuild the dropped indexes, add the
        dropped keys back: each refuses the restore, naming the row, if a key points nowhere."""
        with self._dangling_key_reported():
            self.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # Only now: CREATE INDEX and ALTER TABLE refuse a table with checks still queued.
        for _index, definition in self.suspended_indexes:
            self.execute(definition)
        with self._dangling_key_reported():
            for table, name, definition in self.suspended_foreign_keys:
                self.execute(f"ALTER TABLE {_qualified(self.schema, table)} ADD CONSTRAINT {_qn(name)} {definition}")
        self.execute("SET CONSTRAINTS ALL DEFERRED")

    @contextmanager
    def _dangling_key_reported(self) -> Iterator[None]:
        try:
            with transaction.atomic():
                yield
        except DatabaseError as exc:
            cause = exc.__cause__
            diag = getattr(cause, "diag", None)
            details: dict[str, Any] = {"model": None, "pk": None, "reason": _pg_message(exc)}
            if diag is not None and getattr(cause, "pgcode", "") == "23503":
                plan = next((p for p in self.restorable if p.table == diag.table_name), None)
                match = re.match(r"Key \(([^,()]+)\)=\((.*)\) is not present", diag.message_detail or "")
                if plan is not None:
                    details["model"] = plan.label
                    if match:
                        column = match.group(1).strip('"')
                        f = next((f for f in plan.fields if f.column == column), None)
                        details["field"] = f.attname if f else column
                        row = self.execute(
                            f"SELECT {_qn(plan.pk.column)} FROM {self.table(plan)} WHERE {_qn(column)}::text = %s LIMIT 1",
                            [match.group(2)],
                        ).fetchone()
                        details["pk"] = row[0] if row else None
                        details["reason"] = f"{details['field']}={match.group(2)} apunta a un registro que no existe."
            raise errors.DanglingForeignKeyError(details=details) from None

    def reset_sequences(self) -> None:
        """Move each sequence past the largest key; never back (a concurrent insert may hold a higher id)."""
        for plan in self.restorable:
            pk = plan.pk
            if not isinstance(pk, models.AutoField):  # Small/Big AutoField pass this check too
                continue
            (sequence,) = self.execute("SELECT pg_get_serial_sequence(%s, %s)", [self.table(plan), pk.column]).fetchone()
            if sequence is None:
                continue
            (top,) = self.execute(f"SELECT max({_qn(pk.column)}) FROM {self.table(plan)}").fetchone()
            (last,) = self.execute("SELECT pg_sequence_last_value(%s::regclass)", [sequence]).fetchone()
            if top is not None and (last is None or top > last):
                self.execute("SELECT setval(%s::regclass, %s, true)", [sequence, top])


def _qualified(schema: str, regclass_text: str) -> str:
    """A table named as regclass prints it (unqualified inside the search_path), qualified."""
    return regclass_text if "." in regclass_text else f"{_qn(schema)}.{_qn(regclass_text)}"


def _pg_message(exc: Exception) -> str:
    cause = exc.__cause__ or exc
    return (getattr(getattr(cause, "diag", None), "message_primary", None) or str(cause).splitlines()[0])[:300]


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
