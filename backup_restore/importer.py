"""Restore a JSON backup into the current clinic: all of it in one transaction, or nothing.

POST /api/restore/ reaches here through core/urls_tenant.py → backup_restore/urls.py →
views.TenantDataRestoreView (size, form, role) → services.tenant_data_restore (audit
entry, the clinic's operation lock) → tenant_data_import below:

1. Read and check the header (reader.BackupReader.header, _header_check): format,
   version, tenant, migrations the code knows, models the code knows and the row
   count each declares. Nothing is written yet; a file from elsewhere or from newer
   code is refused here. The reader bounds what the file may cost (reader/).
2. Open one transaction. Every error below rolls all of it back; a dry run rolls
   back on purpose at the end.
3. _Restorer.begin: PostgreSQL is told not to copy refused rows into its log
   (when the role may say so); the restorable tables are locked in one statement
   under BACKUP_RESTORE_LOCK_TIMEOUT, so that busy tables or a deadlock with a
   reader answer a retryable 409 instead of failing later; a temporary staging
   table; the foreign keys between restored tables are dropped for the load
   (constraints.py says why). With replace, the restorable tables are emptied and
   their non-unique indexes, primary keys and unique constraints dropped.
4. _Restorer.section, once per model in the file's order: its field names are
   matched to the model (unknown → refused; missing → default, null or refused);
   rows stream from the file by COPY into the staging table, each checked first
   for what PostgreSQL cannot store (values.py) and each file's name for the clinic's
   own prefix (core.media_names), then one INSERT … SELECT … ON CONFLICT (pk) DO UPDATE
   casts and writes them (staging.py); diagnosis.py names a row PostgreSQL refuses.
   A row past the header's count is refused before it is parsed (reader/), a short section at its end.
   With replace, a model's first section skips the staging table: its rows go by COPY
   straight into the emptied table, as psql loads a pg_dump file (loader.py, the
   COPY text from copy_text.py). The COPYs, and each loaded table's end (its keys to
   users, its indexes, its keys to tables already loaded), are queued on a thread of
   their own (background.py) while the file is read on, a few MiB ahead, and their
   results checked in order. The same checks run first and the same values are
   stored; a batch PostgreSQL refuses is rolled back and goes through the staging
   table, whose diagnosis names the row and the reason.
5. After the last section: a model the header declared rows for but the file
   never brought (a file cut short and closed again) is refused.
6. _Restorer.check_foreign_keys: queued checks fire, indexes and unique keys are rebuilt,
   dropped keys are added back; a key pointing nowhere refuses the restore, naming the row,
   as does a key or unique value the file repeats (the first row, in the file's order, that repeats one).
7. _Restorer.reset_sequences: each sequence moves past the largest key, never back.
8. Commit, and answer a RestoreResult: created, updated and deleted per model.

Memory stays bounded whatever the size of the file: rows are never all in Python.
A refused row is logged as its code, model and key, never its values.
"""
from __future__ import annotations

import gc
import logging
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

from django.conf import settings
from django.db import DatabaseError, connection, models, transaction
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.background import Background
from backup_restore.classification import Policy
from backup_restore.constraints import SuspendedConstraints
from backup_restore.loader import DirectLoad
from backup_restore.plan import (
    FORMAT_NAME, FORMAT_VERSION, STAGE, ModelPlan, ProgressCallback, models_plan, qn, qualified_table,
)
from backup_restore.reader import BackupReader, SectionRows, open_backup_stream
from backup_restore.row_checks import RowChecks
from backup_restore.staging import StagedWrite
from core.errors import RestoreBusyError, RestoreFailedError
from core.schemas import code_migrations

logger = logging.getLogger(__name__)

# The lock waits PostgreSQL reports as "try again": lock_not_available, deadlock_detected.
_BUSY_CODES = frozenset({"55P03", "40P01"})


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


class _Restorer(DirectLoad, StagedWrite, RowChecks):
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
        self.background = Background(self.cursor.cursor.connection)
        self.constraints = SuspendedConstraints(execute=self.execute, schema=schema_name, restorable=self.restorable)
        self.loaded: set[str] = set()  # models whose section was read already
        self.in_flight: deque[tuple] = deque()  # DirectLoad's COPYs and tables' ends on the background
        self.ahead = 0
        self.loaded_tables: set[str] = set()  # tables loaded by DirectLoad, whose keys may be added
        self.summary: RestoreResult | None = None

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
        self.summary = summary
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
        else:
            self.constraints.drop_unique_keys()
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

    def section(self, label: str, names: list, rows: SectionRows, summary: RestoreResult) -> None:
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
            self.settle_all()  # the staging path's statements run on this thread, after every COPY sent
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

    def check_foreign_keys(self) -> None:
        """Indexes built and keys added back; a key pointing nowhere refuses the restore, naming the row."""
        self.settle_all()
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
