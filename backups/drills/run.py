"""One restore drill of one clinic's backup (the steps are backups.drills' map)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django.db import DatabaseError, connection
from django.utils import timezone

from backups.actions import BackupAction
from backups.alerting import drill_alerts
from backups.drills.checks import drill_files_check, drill_rows_compare
from backups.drills.errors import DrillFailedError, DrillMigrationError, DrillNoBackupError, DrillPreemptedError
from backups.errors import PsqlError
from backups.models import BackupRecord, DrillStatus
from backups.restore import replay_checks, replay_into_staging
from backups.selectors import backup_get_completed, backup_last_completed
from bitacora.models import Outcome
from bitacora.services import AuditContext, audit_failure, record
from core.exceptions import DomainError
from core.faults import kill_point
from core.files import temporary_file
from core.locks import tenant_drill_lock
from core.schemas import drill_schemas, schema_drop, schema_pending_migrations

logger = logging.getLogger(__name__)
TARGET_TYPE = "backup"
ERROR_CHARS = 2000
# What psql prints with the SQLSTATE when a restore stopped the drill's replay (core.locks): its
# session terminated (admin_shutdown), or the replay lock already taken (lock_not_available).
_PREEMPTED_SQLSTATES = ("57P01", "55P03")


@dataclass
class _Drill:
    """What one drill found, step by step: the record's fields and the audit entry are made of it."""

    backup: BackupRecord
    report: dict = field(default_factory=lambda: {"seconds": {}})
    phase: str = "copy"
    _mark: float = field(default_factory=time.monotonic)

    def lap(self, phase: str, next_phase: str) -> None:
        now = time.monotonic()
        self.report["seconds"][phase] = round(now - self._mark, 3)
        self._mark, self.phase = now, next_phase

    @property
    def restore_seconds(self) -> float:
        """A restore's part of the drill: copy, replay and migration (what a real restore of the database takes)."""
        seconds = self.report["seconds"]
        return round(sum(seconds.get(phase, 0) for phase in ("copy", "replay", "migrate")), 3)


def _replay_and_compare(drill: _Drill, schema: str) -> None:
    """Steps 2 to 5: the restore's own path into a scratch schema, dropped whatever happens."""
    names = drill_schemas(schema)

    def compare() -> None:  # between the replay and any migration, which may rewrite rows
        drill.lap("replay", "compare")
        drill.report.update(drill_rows_compare(backup=drill.backup, scratch=names.staging))
        drill.lap("compare", "migrate")

    try:
        with temporary_file() as dump_file:
            older_than_code = replay_checks(drill.backup, dump_file)
            drill.report["migrated_forward"] = older_than_code
            drill.lap("copy", "replay")
            try:
                replay_into_staging(schema=schema, names=names, dump_file=dump_file, older_than_code=older_than_code,
                                    replayed=compare, drill=True)
            except PsqlError as exc:
                if any(code in str(exc.message) for code in _PREEMPTED_SQLSTATES):
                    raise DrillPreemptedError() from exc
                raise
            except DomainError:
                raise
            except Exception as exc:
                if drill.phase != "migrate":  # a dump that is no gzip, a server gone: the drill failed, said how
                    raise DrillFailedError(details={"phase": drill.phase, "exception": type(exc).__name__}) from exc
                # The migration that failed is the first still pending; never the error's text, which may quote rows.
                pending = schema_pending_migrations(names.staging)
                raise DrillMigrationError(details={"migration": pending[0] if pending else "", "exception": type(exc).__name__,
                                                   "sqlstate": getattr(getattr(exc, "__cause__", None), "pgcode", None)}) from exc
            drill.lap("migrate", "files")
            kill_point("drill.after_migrate")
    finally:
        schema_drop(names.staging)


def _drill_claim(backup: BackupRecord) -> None:
    BackupRecord.objects.filter(pk=backup.pk).update(
        drill_status=DrillStatus.RUNNING, drill_started_at=timezone.now(), drill_finished_at=None, drill_error_code="",
        drill_error="",
    )


def _drill_finish(drill: _Drill, error: DomainError | None) -> None:
    status = DrillStatus.PASSED if error is None else (
        DrillStatus.INTERRUPTED if isinstance(error, DrillPreemptedError) else DrillStatus.FAILED)
    if error is not None:
        drill.report["error"] = {"code": error.code, **error.details}
    BackupRecord.objects.filter(pk=drill.backup.pk).update(
        drill_status=status, drill_finished_at=timezone.now(), drill_seconds=drill.restore_seconds,
        drill_error_code=error.code if error else "", drill_error=str(error.message)[:ERROR_CHARS] if error else "",
        drill_report=drill.report,
    )


def _drill_backup(backup_id: int | None) -> BackupRecord:
    if backup_id is not None:
        return backup_get_completed(backup_id=backup_id)
    backup = backup_last_completed()
    if backup is None:
        raise DrillNoBackupError()
    return backup


def drill_run(*, context: AuditContext, backup_id: int | None = None) -> BackupRecord:
    """Restore a backup of this clinic (its latest completed one unless given) into a scratch schema,
    check what came back, record the outcome on the backup and in the audit log; the live clinic is
    never touched. A failed drill is a result, not an error: the record says why."""
    schema = connection.schema_name
    with audit_failure(context=context, action=BackupAction.DRILL, target_type=TARGET_TYPE, target_id=backup_id or ""):
        backup = _drill_backup(backup_id)
        with tenant_drill_lock(schema):  # never the operation lock: the clinic's backups and restores go on
            _drill_claim(backup)
            drill = _Drill(backup=backup)
            error: DomainError | None = None
            try:
                _replay_and_compare(drill, schema)
                kill_point("drill.before_files")
                drill.report.update(drill_files_check(backup=backup, schema=schema))
                drill.lap("files", "done")
            except DomainError as exc:
                error = exc
            except DatabaseError as exc:  # the server failed the drill, not the backup: said as such
                error = DrillFailedError(details={"exception": type(exc).__name__})
            _drill_finish(drill, error)
    backup.refresh_from_db()
    record(context=context, action=BackupAction.DRILL, outcome=Outcome.OK if error is None else Outcome.ERROR,
           target_type=TARGET_TYPE, target_id=backup.pk,
           details={"file_name": backup.file_name, "drill_status": backup.drill_status, "restore_seconds": backup.drill_seconds,
                    **({"code": error.code, "message": str(error.message)} if error else {}),
                    **{key: value for key, value in drill.report.items() if key != "error"}})
    if error is not None and not isinstance(error, DrillPreemptedError):
        logger.warning("drill of %s (%s) failed: %s", backup.file_name, schema, error.code)
    drill_alerts(backup)
    return backup
