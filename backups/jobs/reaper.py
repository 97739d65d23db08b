"""The reaper: what operations killed mid-way left behind, found and put right.

A process may die at any instruction (gunicorn's timeout, a deploy, the memory
limit, SIGKILL). By construction that leaves no half-restored clinic (see
backups.restore), but it can leave:
1. temporary files (core.files.temp_dir_reap removes those no live process locks), and the
   partial patient files of saves to the local media folder whose process died
   (core.media_storage.media_partials_reap: no name a row holds ever has part of a file);
2. operation schemas, `<clinic>__<staging|aside|old>_<hex>`: copies of a clinic;
   Likewise a structure reference's schema, `backups__ref_<hex>`, left by a process that
   died while it built one (backups.dump.cached, step 1): dropped unless its lock is held;
3. records still `running` (a backup, a restore job) whose process is gone: the
   backup's partial objects (its dump, its file list) are deleted and the record marked
   failed; a restore job is failed as interrupted, or completed if its swap had committed;
   the media files a dead restore created and no live row names are deleted (backups.files.cleanup);
4. records still `pending` long after any worker would have taken them (a lost message);
5. a restore drill's scratch schema, `<clinic>__drill_<hex>`, and its backup's drill still
   `running`: the schema dropped, the drill marked `interrupted` (backups.drills).
An operation in progress always holds its clinic's advisory lock (core.locks), and
the session holding it dies with its process. So for each clinic the reaper takes
that lock without waiting: if it is held, an operation is alive and nothing of that
clinic is touched; if not, whatever the clinic's operations left is dead. A drill holds
the clinic's drill lock instead, never the operation lock: its leftovers (5) are put right
under that lock, so a running drill's scratch schema is never taken for a leftover.
It runs when a worker starts, periodically (Celery beat) and as `manage.py reap`. A pass first
asks every clinic's tables at once which clinics have anything to look at (a few queries for
10,000 clinics), then takes the lock of those only, and of those with leftover schemas.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext
from django_tenants.utils import get_public_schema_name, schema_context

from alertas.nights import night_backup_ended
from backups.actions import BackupAction
from backups.alerting import reaped_alert
from backups.dump.reference import reference_schemas_left
from backups.files.cleanup import restore_files_reap
from backups.models import BackupRecord, DrillStatus, RestoreFile, RestoreJob
from backups.files.list import partial_objects_remove
from bitacora.models import Outcome
from bitacora.services import AuditContext, record
from core.errors import DrillInProgressError, OperationInProgressError
from core.exceptions import DomainError
from core.files import temp_dir_reap
from core.locks import tenant_drill_lock, tenant_operation_lock
from core.media_storage import media_partials_reap
from core.models import Tenant
from core.schemas import operation_schemas_left, quote_identifier, schema_drop, schema_is_drill

logger = logging.getLogger(__name__)
CONTEXT = AuditContext.system("reaper")
INTERRUPTED = "interrupted"
HEAL_WAIT_SECONDS = 3


@dataclass
class ReapReport:
    temp_files: list[str] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    restores: list[str] = field(default_factory=list)
    drills: list[str] = field(default_factory=list)
    media_files: list[str] = field(default_factory=list)
    busy_clinics: list[str] = field(default_factory=list)
    failed_clinics: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {key: list(value) for key, value in self.__dict__.items()}

    def cleaned(self) -> dict[str, list[str]]:
        """What was put right (not the clinics found busy or unreadable)."""
        return {key: value for key, value in self.as_dict().items() if value and key not in ("busy_clinics", "failed_clinics")}

    def merge(self, other: "ReapReport") -> None:
        for key, value in other.__dict__.items():
            getattr(self, key).extend(value)


def backup_fail(*, backup: BackupRecord, error: BaseException | str, code: str = "") -> None:
    """Mark a backup failed with a readable reason and remove whatever part of its objects was stored."""
    partial_objects_remove(backup.file_path)
    if isinstance(error, DomainError):
        message, code = str(error.message), error.code
    elif isinstance(error, BaseException):
        message, code = type(error).__name__, code or "backup_failed"
    else:
        message = error
    BackupRecord.objects.filter(pk=backup.pk).update(
        status=BackupRecord.Status.FAILED, error=message, error_code=code, finished_at=timezone.now()
    )


def _reap_backups(schema: str, report: ReapReport) -> None:
    now = timezone.now()
    stale_pending = now - settings.JOB_PENDING_MAX_AGE
    dead = BackupRecord.objects.filter(status=BackupRecord.Status.RUNNING) | BackupRecord.objects.filter(
        status=BackupRecord.Status.PENDING, created_at__lt=stale_pending
    )
    for backup in dead:
        reason = (gettext("Interrumpido: el proceso que hacía el backup terminó antes de acabar.")
                  if backup.status == BackupRecord.Status.RUNNING
                  else gettext("Nunca empezó: ningún proceso tomó el trabajo."))
        backup_fail(backup=backup, error=reason, code=INTERRUPTED)
        record(context=CONTEXT, action=BackupAction.CREATE, outcome=Outcome.ERROR, target_type="backup", target_id=backup.pk,
               details={"file_name": backup.file_name, "code": INTERRUPTED, "message": reason})
        report.backups.append(f"{schema}:{backup.pk}")


def _reap_restores(schema: str, report: ReapReport) -> None:
    stale_pending = timezone.now() - settings.JOB_PENDING_MAX_AGE
    dead = RestoreJob.objects.filter(status=RestoreJob.Status.RUNNING) | RestoreJob.objects.filter(
        status=RestoreJob.Status.PENDING, created_at__lt=stale_pending
    )
    for job in dead:
        if job.phase == RestoreJob.Phase.SWAPPED:
            # The swap committed: the clinic is restored; only the old schema's drop was missed.
            RestoreJob.objects.filter(pk=job.pk).update(
                status=RestoreJob.Status.COMPLETED, phase=RestoreJob.Phase.DONE, finished_at=timezone.now()
            )
            outcome, details = Outcome.OK, {"file_name": job.backup_file_name, "job": job.pk, "completed_by": "reaper"}
        else:
            reason = gettext("Interrumpida: el proceso terminó antes del intercambio; la clínica no cambió.")
            RestoreJob.objects.filter(pk=job.pk).update(
                status=RestoreJob.Status.FAILED, error_code=INTERRUPTED, error=reason, finished_at=timezone.now()
            )
            outcome, details = Outcome.ERROR, {"file_name": job.backup_file_name, "job": job.pk, "code": INTERRUPTED}
        action = BackupAction.RESTORE_AS_NEW_TENANT if job.kind == RestoreJob.Kind.NEW_TENANT else BackupAction.RESTORE
        record(context=CONTEXT, action=action, outcome=outcome, target_type="backup", target_id=job.backup_id or "",
               details=details)
        report.restores.append(f"{schema}:{job.pk}")
    # After the jobs' outcome: a swapped job's names are checked against the restored rows, now live.
    # Counted, not named: the report is logged, and a file's name may be a patient's.
    if deleted := restore_files_reap(schema):
        report.media_files.append(f"{schema}:{len(deleted)}")


def _drill_running(schema: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {quote_identifier(schema)}.{quote_identifier(BackupRecord._meta.db_table)} "
                       "WHERE drill_status = %s)", [DrillStatus.RUNNING])
        return cursor.fetchone()[0]


def _reap_drills(schema: str, leftovers: list[str], report: ReapReport, *, has_tables: bool) -> None:
    """Step 5: a dead drill's scratch schema and `running` drill, unless a drill of the clinic is alive."""
    if not leftovers and not (has_tables and _drill_running(schema)):
        return  # the common case, in one query and no lock
    try:
        with tenant_drill_lock(schema):
            for name in leftovers:
                schema_drop(name)
                report.schemas.append(name)
            if not has_tables:
                return
            with schema_context(schema):
                for backup in BackupRecord.objects.filter(drill_status=DrillStatus.RUNNING):
                    reason = gettext("Interrumpido: el proceso que hacía el simulacro terminó antes de acabar.")
                    BackupRecord.objects.filter(pk=backup.pk).update(
                        drill_status=DrillStatus.INTERRUPTED, drill_error_code=INTERRUPTED, drill_error=reason,
                        drill_finished_at=timezone.now())
                    record(context=CONTEXT, action=BackupAction.DRILL, outcome=Outcome.ERROR, target_type="backup",
                           target_id=backup.pk, details={"file_name": backup.file_name, "code": INTERRUPTED, "message": reason})
                    report.drills.append(f"{schema}:{backup.pk}")
    except DrillInProgressError:
        pass  # a drill is alive: its scratch schema is its own


def reap_clinic(schema: str, leftovers: list[str], report: ReapReport, *, has_tables: bool, wait_seconds: float = 0) -> None:
    """Put right what dead operations left on one clinic, unless one is alive (its lock is held);
    what was put right is an alert, and the backups failed as interrupted end their night's jobs."""
    found = ReapReport()
    _reap_clinic(schema, leftovers, found, has_tables=has_tables, wait_seconds=wait_seconds)
    report.merge(found)
    if found.cleaned():
        reaped_alert(schema, found.cleaned())
    for entry in found.backups:
        night_backup_ended(schema=schema, backup_id=int(entry.rpartition(":")[2]), ok=False)


def _reap_clinic(schema: str, leftovers: list[str], report: ReapReport, *, has_tables: bool, wait_seconds: float) -> None:
    drills = [name for name in leftovers if schema_is_drill(name)]
    leftovers = [name for name in leftovers if not schema_is_drill(name)]
    try:
        _reap_drills(schema, drills, report, has_tables=has_tables)
    except DatabaseError:
        logger.exception("reaper: could not check the drills of %s", schema)
        report.failed_clinics.append(schema)
    try:
        with tenant_operation_lock(schema, wait_seconds=wait_seconds):
            for name in leftovers:
                schema_drop(name)
                report.schemas.append(name)
            if has_tables:
                with schema_context(schema), transaction.atomic():
                    _reap_backups(schema, report)
                    _reap_restores(schema, report)
    except OperationInProgressError:
        report.busy_clinics.append(schema)
    except DatabaseError:
        # A clinic the reaper cannot read (its migrations not applied yet) must not stop the others.
        logger.exception("reaper: could not check %s", schema)
        report.failed_clinics.append(schema)


def clinic_heal(schema: str) -> None:
    """Self-healing, as a new operation of this clinic starts: when a dead one left a record
    `running` or an operation schema and nothing holds the clinic's lock (its process is gone),
    the clinic is reaped now. A kill then needs no worker, cron job or operator to be put
    right; with the lock held, nothing is touched and the new operation gets its 409."""
    leftovers = operation_schemas_left().get(schema, [])
    running = (BackupRecord.objects.filter(status=BackupRecord.Status.RUNNING).exists()
               or RestoreJob.objects.filter(status=RestoreJob.Status.RUNNING).exists())
    if not (leftovers or running):
        return
    report = ReapReport()
    # A process killed a moment ago may still hold the lock until PostgreSQL notices its session
    # is gone (a client retrying at once after a 502): wait that long, not more.
    reap_clinic(schema, leftovers, report, has_tables=True, wait_seconds=HEAL_WAIT_SECONDS)
    if found := report.cleaned():
        logger.warning("reaper (self-healing, %s): %s", schema, found)


def _reap_references(report: ReapReport) -> None:
    for name in reference_schemas_left():
        try:
            with tenant_operation_lock(name):  # held by a live process while it builds the reference
                schema_drop(name)
                report.schemas.append(name)
        except OperationInProgressError:
            pass


# Which clinics have anything a dead operation may have left in their tables, in one UNION ALL per
# SCAN_BATCH clinics: at 10,000 clinics, taking each one's lock and reading its tables in its schema
# costs a dozen queries each (measured: 7 ms a clinic, 70 s a pass); the scan, a few seconds in all.
# A clinic whose operation dies after its branch ran is found by the next pass. Each branch reads
# three tables, so 100 clinics hold some 600 locks until the statement ends (the lock table is shared).
SCAN_BATCH = 100
_WORK_BRANCH = """SELECT %s::text WHERE
  EXISTS (SELECT 1 FROM {backups} WHERE status = %s OR (status = %s AND created_at < %s) OR drill_status = %s)
  OR EXISTS (SELECT 1 FROM {restores} WHERE status = %s OR (status = %s AND created_at < %s))
  OR EXISTS (SELECT 1 FROM {files})"""


def _clinics_with_work(schemas: list[str]) -> set[str]:
    """Of these clinics, those whose backups, restores or drills a dead operation may have left behind."""
    stale = timezone.now() - settings.JOB_PENDING_MAX_AGE
    tables = {key: quote_identifier(model._meta.db_table) for key, model in
              (("backups", BackupRecord), ("restores", RestoreJob), ("files", RestoreFile))}
    found: set[str] = set()
    with connection.cursor() as cursor:
        cursor.execute("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE c.relname = %s AND c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)",
                       [RestoreFile._meta.db_table, schemas])
        readable = sorted(name for (name,) in cursor.fetchall())
        found.update(set(schemas) - set(readable))  # not migrated: the clinic's own pass says why
        for start in range(0, len(readable), SCAN_BATCH):
            branches, params = [], []
            for schema in readable[start:start + SCAN_BATCH]:
                branches.append(_WORK_BRANCH.format(**{key: f"{quote_identifier(schema)}.{table}" for key, table in tables.items()}))
                params += [schema, BackupRecord.Status.RUNNING, BackupRecord.Status.PENDING, stale, DrillStatus.RUNNING,
                           RestoreJob.Status.RUNNING, RestoreJob.Status.PENDING, stale]
            cursor.execute(" UNION ALL ".join(branches), params)
            found.update(name for (name,) in cursor.fetchall())
    return found


def reap() -> ReapReport:
    """Everything dead operations left, on every clinic (see the module's docstring)."""
    report = ReapReport(temp_files=temp_dir_reap() + media_partials_reap())
    _reap_references(report)
    left = operation_schemas_left()
    clinics = set(Tenant.objects.exclude(schema_name=get_public_schema_name()).values_list("schema_name", flat=True))
    with_work = _clinics_with_work(sorted(clinics))
    previous = connection.tenant
    try:
        for schema in sorted(with_work | set(left)):
            reap_clinic(schema, left.get(schema, []), report, has_tables=schema in clinics)
    finally:
        connection.set_tenant(previous)
    if found := report.cleaned():
        logger.warning("reaper: %s", found)
    return report
