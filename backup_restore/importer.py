"""Restore a JSON backup into the current clinic: all of it in one transaction, or nothing.

POST /api/restore/ reaches here through core/urls_tenant.py → backup_restore/urls.py →
views.TenantDataRestoreView (size, form, role) → services.tenant_data_restore (audit
entry, the clinic's operation lock) → tenant_data_import below:

1. Read and check the header (reader.BackupReader.header, _header_check): format,
   version, tenant, migrations the code knows, models the code knows and the row
   count each declares. Nothing is written yet; a file from elsewhere or from newer
   code is refused here. The reader bounds what the file may cost (reader.py).
2. Open one transaction. Every error below rolls all of it back; a dry run rolls
   back on purpose at the end.
3. _Restorer.begin: PostgreSQL is told not to copy refused rows into its log
   (when the role may say so); the restorable tables are locked in one statement
   under BACKUP_RESTORE_LOCK_TIMEOUT, so that busy tables or a deadlock with a
   reader answer a retryable 409 instead of failing later; a temporary staging
   table; the foreign keys between restored tables are dropped for the load
   (constraints.py says why). With replace, the restorable tables are emptied and
   their non-unique indexes dropped.
4. _Restorer.section, once per model in the file's order: its field names are
   matched to the model (unknown → refused; missing → default, null or refused);
   rows stream from the file by COPY into the staging table, each checked first
   for what PostgreSQL cannot store (values.py), then one
   INSERT … SELECT … ON CONFLICT (pk) DO UPDATE casts and writes them. When
   PostgreSQL refuses the statement, diagnosis.py names the row and the reason.
   A section with more or fewer rows than the header declared is refused.
   With replace, a model's first section skips the staging table: its rows go by COPY
   straight into the emptied table, as psql loads a pg_dump file (_Restorer._load),
   each batch loaded while the next is read. The same checks run first and the same
   values are stored; a batch PostgreSQL refuses is rolled back and goes through the
   staging table, whose diagnosis names the row and the reason.
5. After the last section: a model the header declared rows for but the file
   never brought (a file cut short and closed again) is refused.
6. _Restorer.check_foreign_keys: queued checks fire, indexes are rebuilt, the
   dropped keys are added back; a key pointing nowhere refuses the restore,
   naming the row.
7. _Restorer.reset_sequences: each sequence moves past the largest key, never back.
8. Commit, and answer a RestoreResult: created, updated and deleted per model.

Memory stays bounded whatever the size of the file: rows are never all in Python.
A refused row is logged as its code, model and key, never its values.
"""
from __future__ import annotations

import concurrent.futures
import gc
import io
import json
import logging
import operator
import re
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import repeat
from typing import BinaryIO, Callable, Iterator

import psycopg2
from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.classification import Policy
from backup_restore.constraints import SuspendedConstraints
from backup_restore.diagnosis import dangling_keys_reported, refused_batch_error
from backup_restore.plan import (
    FORMAT_NAME, FORMAT_VERSION, STAGE, ModelPlan, ProgressCallback, models_plan, qn, qualified_table,
)
from backup_restore.reader import BackupReader, open_backup_stream
from backup_restore.values import MAX_JSONB_BYTES, NUL_ESCAPE, row_text_suspect, too_big_refusal, value_refusal
from core.errors import RestoreBusyError, RestoreFailedError
from core.schemas import code_migrations

logger = logging.getLogger(__name__)

# A COPY batch ends at this many rows or this many characters of JSON, whichever comes first.
IMPORT_COPY_ROWS = 20_000
# How often the parsing thread offers the GIL to the loading one (seconds; Python's default is 0.005).
SWITCH_INTERVAL = 0.0005
# Loaded straight into a table, a batch is smaller: it is kept (as rows) until its COPY ends.
IMPORT_LOAD_ROWS = 5_000
IMPORT_COPY_CHARS = 4 << 20
# The lock waits PostgreSQL reports as "try again": lock_not_available, deadlock_detected.
_BUSY_CODES = frozenset({"55P03", "40P01"})
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
    plans = {p.label: p for p in models_plan()}
    reader = BackupReader(open_backup_stream(source), key_of=lambda label: plans[label].pk.attname if label in plans else None)
    header = reader.header()
    _header_check(header, schema_name=schema_name, allow_other_tenant=allow_other_tenant)
    declared = _declared_counts(header, known=plans)
    result = RestoreResult(
        replace=replace, dry_run=dry_run, tenant=schema_name, source_tenant=str((header.get("tenant") or {}).get("schema"))
    )
    label = None
    try:
        with transaction.atomic(), _without_cyclic_gc():
            restorer = _Restorer(schema_name=schema_name, replace=replace, progress=progress,
                                 bytes_read=lambda: reader.bytes_read)
            try:
                restorer.begin(result)
                for label, names, rows in reader.sections(declared=declared):
                    restorer.section(label, names, rows, result)
                label = None
                restorer.check_foreign_keys()
                restorer.reset_sequences()
            finally:
                restorer.close()
            if dry_run:
                transaction.set_rollback(True)
    except DatabaseError as exc:
        # Not a refusal diagnosis.py recognised: a 500, but its text (DETAIL, CONTEXT) may
        # quote the file's rows, so only its code reaches the log and the answer.
        code = getattr(exc.__cause__, "pgcode", None)
        logger.error("restore of %s failed: pgcode=%s model=%s", schema_name, code, label)
        raise RestoreFailedError(details={"pgcode": code, "model": label}) from None
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Python's cycle collector off while rows are read: every row is a new list, and with a
    batch of them alive the collector ran over and over through all of them (a third of the
    time). Rows are freed by reference counting; the collector runs again afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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


def _declared_counts(header: dict, *, known: dict) -> dict[str, int]:
    """The row count the header declares per model: every section is checked against it."""
    declared = header.get("models")
    if not isinstance(declared, dict):
        raise errors.WrongFormatError(details={"reason": _("Falta `models` en la cabecera.")})
    unknown = [label for label in declared if label not in known]
    if unknown:
        raise errors.UnknownModelError(details={"model": unknown[0]})
    counts = {}
    for label, entry in declared.items():
        count = entry.get("count") if isinstance(entry, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise errors.WrongFormatError(details={"model": label, "reason": _(
                "La cabecera debe declarar `count`, un entero no negativo, por modelo.")})
        counts[label] = count
    return counts


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


# allow_nan=False: a JSON field's 1e200000 became float("inf"), which jsonb cannot hold.
_dumps = json.JSONEncoder(default=_dumps_default, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class _NotCopyText(Exception):
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
    raise _NotCopyText()


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
                return _dumps(value).translate(_COPY_ESCAPES)
            except ValueError:  # a number jsonb cannot hold: refused through the staging path
                raise _NotCopyText() from None

        return encode_json
    if isinstance(f, models.DecimalField):
        return _decimal_text
    return _scalar_text


_PLAIN_TYPES = frozenset({str, int, type(None)})
_NULL_MARK = "\x01"  # where a null goes while a line is escaped; a value holding one is written value by value
_NULL_FIELD = f"\t{_NULL_MARK}\t"


class CopyRows:
    """A section's rows as COPY text lines for their table, or _NotCopyText.

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
                columns[i] = [None if value is None and nullable else _dumps(value) for value in columns[i]]
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
                        values[i] = _dumps(values[i])
                    except ValueError:  # a number jsonb cannot hold: refused through the staging path
                        raise _NotCopyText() from None
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


def _copy_in_savepoint(raw, sql: str, data: bytes) -> bool:
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


class _Background:
    """Statements run on a thread of their own while the restore reads on: each batch's COPY,
    and a loaded table's indexes. psycopg2 lets the GIL go while the server works, so the
    file is parsed on one core while PostgreSQL loads on the other.

    One statement at a time on the connection: the thread runs them in order, and the
    restore's own statements (execute, _copy, the progress callback) first wait for them
    all (wait). The thread uses the psycopg2 connection directly, with savepoints of its
    own: Django's connection and savepoints belong to the thread that opened them.
    """

    def __init__(self, raw):
        self.raw = raw
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-load")
        self._futures: list[Future] = []
        # The thread takes the GIL back after each wait on the server; by default the parsing
        # thread lets it go only every 5 ms, which would stall the load on every batch.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL))

    def submit(self, function: Callable, *args) -> Future:
        future = self._pool.submit(function, self.raw, *args)
        self._futures.append(future)
        return future

    def wait(self) -> None:
        """Once every statement sent ended; the first error raised, as Django raises it."""
        futures, self._futures = self._futures, []
        concurrent.futures.wait(futures)
        with connection.wrap_database_errors:
            for future in futures:
                future.result()

    def close(self) -> None:
        concurrent.futures.wait(self._futures)  # whatever happened, nothing runs on the connection after this
        self._futures = []
        self._pool.shutdown(wait=True)
        sys.setswitchinterval(self._switch_interval)


def _execute_raw(raw, sql: str) -> None:
    with raw.cursor() as cursor:
        cursor.execute(sql)


class _Restorer:
    def __init__(self, *, schema_name: str, replace: bool, progress: ProgressCallback | None,
                 bytes_read: Callable[[], int] = lambda: 0):
        self.schema = schema_name
        self.bytes_read = bytes_read  # how much of the file the reader has consumed
        self.replace = replace
        self.progress = progress
        self.plans = {p.label: p for p in models_plan()}
        self.restorable = [p for p in self.plans.values() if p.policy is Policy.RESTORE]
        self.restorable_models = {p.model for p in self.restorable}
        self.cursor = connection.cursor()
        self.background = _Background(self.cursor.cursor.connection)
        self.constraints = SuspendedConstraints(execute=self.execute, schema=schema_name, restorable=self.restorable)
        self.loaded: set[str] = set()  # models whose section was read already

    def table(self, plan_or_model) -> str:
        model = plan_or_model.model if isinstance(plan_or_model, ModelPlan) else plan_or_model
        return qualified_table(self.schema, model)

    def execute(self, sql: str, params=None):
        self.background.wait()
        self.cursor.execute(sql, params)
        return self.cursor

    def close(self) -> None:
        self.background.close()
        self.cursor.close()

    # -- setup

    def begin(self, summary: RestoreResult) -> None:
        self._server_log_quieted()
        self._tables_locked()
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

    def _server_log_quieted(self) -> None:
        """Keep refused rows out of PostgreSQL's own log, for this transaction.

        The server logs a failed statement with its DETAIL ("Key (documento)=(…)",
        "Failing row contains (…)") and CONTEXT (a COPY line): uploaded patient data.
        Both settings are superuser-only unless granted (PostgreSQL 15+: GRANT SET ON
        PARAMETER); without the right, the role's own defaults decide
        (ALTER ROLE … SET log_error_verbosity = terse, by an administrator).
        """
        if connection.pg_version >= 150000:
            query = ("SELECT has_parameter_privilege('log_error_verbosity', 'SET') "
                     "AND has_parameter_privilege('log_min_error_statement', 'SET')")
        else:  # pragma: no cover - PostgreSQL 14 and older
            query = "SELECT current_setting('is_superuser') = 'on'"
        (allowed,) = self.execute(query).fetchone()
        if not allowed:
            logger.warning("restore of %s: this role may not set log_error_verbosity; PostgreSQL's log "
                           "may quote refused rows", self.schema)
            return
        self.execute("SET LOCAL log_error_verbosity = terse")  # no DETAIL, HINT, QUERY or CONTEXT lines
        self.execute("SET LOCAL log_min_error_statement = panic")  # no STATEMENT line either

    def _tables_locked(self) -> None:
        """Every restorable table, locked at once, waiting at most BACKUP_RESTORE_LOCK_TIMEOUT.

        Taken one ALTER TABLE at a time, the locks of the foreign-key suspension
        deadlocked with a reader holding some of the tables and waiting for others,
        and the restore failed with a 500. Held from here to the commit, they make
        every later statement of the restore wait for nothing.
        """
        (previous,) = self.execute("SELECT current_setting('lock_timeout')").fetchone()
        self.execute("SELECT set_config('lock_timeout', %s, true)", [settings.BACKUP_RESTORE_LOCK_TIMEOUT])
        tables = ", ".join(self.table(p) for p in self.restorable)
        try:
            with transaction.atomic():
                self.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
        except DatabaseError as exc:
            code = getattr(exc.__cause__, "pgcode", None)
            if code not in _BUSY_CODES:
                raise
            logger.warning("restore of %s: tables busy (%s), answered 409", self.schema, code)
            raise RestoreBusyError(details={"lock_timeout": settings.BACKUP_RESTORE_LOCK_TIMEOUT}) from None
        self.execute("SELECT set_config('lock_timeout', %s, true)", [previous])

    # -- one section

    def section(self, label: str, names: list, rows: Iterator[list], summary: RestoreResult) -> None:
        plan = self.plans.get(label) if isinstance(label, str) else None
        if plan is None:
            raise errors.UnknownModelError(details={"model": label})
        if plan.policy is not Policy.RESTORE:
            summary.skipped_models.append(label)
            return
        fields, default_makers = self._section_fields(plan, names)
        first_section = label not in self.loaded
        self.loaded.add(label)
        if self.replace and first_section:
            created, updated = self._load(plan, fields, rows, ncols=len(names), default_makers=default_makers)
        else:
            total = self._stage(plan, fields, rows, ncols=len(names), default_makers=default_makers)
            created, updated = self._write(plan, fields)[:2] if total else (0, 0)
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

    def _checked_rows(
        self, plan: ModelPlan, fields: list[models.Field], rows: Iterator[list], *,
        ncols: int, default_makers: list[Callable],
    ) -> Iterator[list]:
        """The section's rows, each with its defaults added, once it has the right length and a key."""
        label = plan.label
        pk_index = fields.index(plan.pk)
        json_indexes = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
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
            yield row

    def _json_line(self, plan: ModelPlan, fields: list[models.Field], row: list) -> str:
        """The row as the staging table's JSON text, once it is known PostgreSQL can store it."""
        try:
            line = _dumps(row)
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

    def _load(
        self, plan: ModelPlan, fields: list[models.Field], rows: Iterator[list], *,
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
        next batch is read (_Background).
        """
        copy_rows = CopyRows(fields)
        copy_sql = f"COPY {self.table(plan)} ({', '.join(qn(f.column) for f in fields)}) FROM STDIN"
        created = total = 0
        in_flight: tuple[list[list], Future | None] | None = None
        checked = self._checked_rows(plan, fields, rows, ncols=ncols, default_makers=default_makers)
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

    def _next_batch(self, checked: Iterator[list], plan: ModelPlan, fields: list[models.Field],
                    copy_rows: "CopyRows") -> list[list]:
        """The next rows, up to IMPORT_LOAD_ROWS or IMPORT_COPY_CHARS bytes of the file.

        A row refused while it is read is refused after the rows before it are checked, so
        the first refused row of the file is the one reported, as row by row.
        """
        batch: list[list] = []
        start = self.bytes_read()
        try:
            for row in checked:
                batch.append(row)
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
                except _NotCopyText:
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
        return batch, self.background.submit(_copy_in_savepoint, copy_sql, text.encode())

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
            self.background.submit(_execute_raw, definition)

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
            biggest = max(zip(fields, row), key=lambda pair: len(_dumps(pair[1])))[0]
            raise errors.InvalidValueError(details={"model": plan.label, "pk": pk, "field": biggest.attname,
                                                    "reason": too_big_refusal(size)})
        return line  # a false alarm: text that only spells a backslash and "u0000"

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

    def _write(self, plan: ModelPlan, fields: list[models.Field]) -> tuple[int, int, object]:
        """Upsert the staged rows into the model's table; (created, updated, the key of one row updated)."""
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
