from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from backups.errors import BackupNotCompletedError, BackupNotFoundError, RestoreJobNotFoundError
from backups.models import BackupRecord, DrillStatus, RestoreJob, warnings_summary
from core.models import Tenant
from core.schemas import quote_identifier
from core.selectors import tenant_clinics


def backup_list(*, backup_type: str | None = None, status: str | None = None) -> QuerySet[BackupRecord]:
    """This clinic's backups, newest first."""
    records = BackupRecord.objects.select_related("created_by").order_by("-created_at", "-id")
    if backup_type:
        records = records.filter(backup_type=backup_type)
    if status:
        records = records.filter(status=status)
    return records


def backup_get(*, backup_id: int) -> BackupRecord:
    """One backup of this clinic; another clinic's id is simply unknown here."""
    record = BackupRecord.objects.select_related("created_by").filter(pk=backup_id).first()
    if record is None:
        raise BackupNotFoundError(details={"id": backup_id})
    return record


def backup_get_completed(*, backup_id: int) -> BackupRecord:
    """One backup of this clinic that can be downloaded or restored (409 while running or failed)."""
    backup = backup_get(backup_id=backup_id)
    if backup.status != BackupRecord.Status.COMPLETED:
        raise BackupNotCompletedError(details={"id": backup.pk, "status": backup.status})
    return backup


def restore_job_get(*, job_id: int) -> RestoreJob:
    """One restore of this clinic; another clinic's id is unknown here."""
    job = RestoreJob.objects.filter(pk=job_id).first()
    if job is None:
        raise RestoreJobNotFoundError(details={"id": job_id})
    return job


def backup_last_completed() -> BackupRecord | None:
    """This clinic's newest completed backup, if any."""
    return BackupRecord.objects.filter(status=BackupRecord.Status.COMPLETED).order_by("-created_at", "-id").first()


def backup_last_drilled() -> BackupRecord | None:
    """This clinic's backup whose drill started last, if any drill ever did."""
    return BackupRecord.objects.exclude(drill_started_at=None).order_by("-drill_started_at", "-id").first()


# The platform's view of every clinic's backups reads each clinic's table in one UNION ALL
# per batch of clinics. Each branch locks its table and the indexes the planner opens
# until the statement ends, and the lock table is shared by every session (64 ×
# max_connections by default): 50 clinics take some 350 locks. Measured at 1,000 clinics,
# batches of 50 to 200 cost the same (bench/bench_platform.py).
SUMMARY_BATCH = 50
SUMMARY_ERROR_CHARS = 300


@dataclass(frozen=True)
class ClinicBackupSummary:
    """One clinic's backups at a glance, for the platform's operators."""

    tenant: Tenant
    has_table: bool  # False: the clinic's schema is not migrated (no backups table)
    completed_count: int = 0
    total_size: int = 0
    last_completed_at: datetime | None = None
    last_completed_size: int | None = None
    last_completed_warnings: list = field(default_factory=list)
    last_failed_at: datetime | None = None
    last_failure: str = ""
    in_progress: int = 0
    overdue: bool = False
    unsealed_count: int = 0  # completed backups written before sealing (backups.storage.sealed): plain in the bucket
    # The last restore drill that passed or failed (backups.drills), on whichever backup it ran.
    last_drill_status: str = ""
    last_drill_at: datetime | None = None
    last_drill_seconds: float | None = None
    last_drill_error: str = ""

    @property
    def last_completed_warning(self) -> str:
        return warnings_summary(self.last_completed_warnings)

    @property
    def total_size_mb(self) -> Decimal:
        return _megabytes(self.total_size)

    @property
    def last_completed_size_mb(self) -> Decimal | None:
        return None if self.last_completed_size is None else _megabytes(self.last_completed_size)


def _megabytes(size: int) -> Decimal:
    return BackupRecord(file_size=size).file_size_mb


def backup_is_overdue(*, last_completed_at: datetime | None, clinic_created_at: datetime, now: datetime,
                      after: timedelta) -> bool:
    """Missed the nightly window: no completed backup for `after` (a new clinic gets that long for its first)."""
    return (last_completed_at or clinic_created_at) < now - after


def backup_summary_list(*, now: datetime | None = None, clinics: list[Tenant] | None = None) -> list[ClinicBackupSummary]:
    """Every active clinic's backups (counts, sizes, last success and failure, last drill, overdue), by
    clinic name; or those of the given clinics, in their order (a page of them).

    Reads across schemas without switching: schema-qualified tables in one UNION ALL
    query per SUMMARY_BATCH clinics, so the number of queries does not grow per clinic.
    """
    now = now or timezone.now()
    clinics = list(tenant_clinics(active_only=True)) if clinics is None else clinics
    rows: dict[str, tuple] = {}
    with connection.cursor() as cursor:  # one cursor: django-tenants sets the search_path once per cursor
        with_table = _schemas_with_table(cursor, [clinic.schema_name for clinic in clinics], BackupRecord._meta.db_table)
        schemas = [clinic.schema_name for clinic in clinics if clinic.schema_name in with_table]
        for start in range(0, len(schemas), SUMMARY_BATCH):
            rows.update(_summary_rows(cursor, schemas[start:start + SUMMARY_BATCH]))
    return [_summary(clinic, rows.get(clinic.schema_name), now) for clinic in clinics]


def _schemas_with_table(cursor, schemas: list[str], table: str) -> set[str]:
    cursor.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %s AND c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)",
        [table, schemas],
    )
    return {name for (name,) in cursor.fetchall()}


# One branch per clinic: its completed backups counted and summed (those whose manifest says
# nothing of sealing counted apart: they are plain in the bucket), its newest completed and
# newest failed backup, and how many are queued or running. The table name is the only part
# built from data, always through quote_identifier; every value is a parameter.
_SUMMARY_BRANCH = """
SELECT %s::text, totals.completed, totals.total_size, totals.in_progress,
       last_ok.created_at, last_ok.file_size, last_ok.warnings::text, last_failed.at, last_failed.reason,
       totals.unsealed,
       last_drill.drill_status, last_drill.drill_finished_at, last_drill.drill_seconds, last_drill.reason
FROM (SELECT count(*) FILTER (WHERE status = %s) AS completed,
             coalesce(sum(file_size) FILTER (WHERE status = %s), 0) AS total_size,
             count(*) FILTER (WHERE status IN (%s, %s)) AS in_progress,
             count(*) FILTER (WHERE status = %s AND manifest -> 'encryption' IS NULL) AS unsealed
      FROM {table}) AS totals
LEFT JOIN LATERAL (SELECT created_at, file_size, warnings FROM {table} WHERE status = %s
                   ORDER BY created_at DESC, id DESC LIMIT 1) AS last_ok ON true
LEFT JOIN LATERAL (SELECT coalesce(finished_at, created_at) AS at,
                          left(coalesce(nullif(error, ''), error_code), %s) AS reason
                   FROM {table} WHERE status = %s
                   ORDER BY created_at DESC, id DESC LIMIT 1) AS last_failed ON true
LEFT JOIN LATERAL (SELECT drill_status, drill_finished_at, drill_seconds,
                          left(coalesce(nullif(drill_error, ''), drill_error_code), %s) AS reason
                   FROM {table} WHERE drill_status IN (%s, %s)
                   ORDER BY drill_finished_at DESC, id DESC LIMIT 1) AS last_drill ON true
"""


def _summary_rows(cursor, schemas: list[str]) -> dict[str, tuple]:
    status = BackupRecord.Status
    table = quote_identifier(BackupRecord._meta.db_table)
    branches, params = [], []
    for schema in schemas:
        branches.append(_SUMMARY_BRANCH.format(table=f"{quote_identifier(schema)}.{table}"))
        params += [schema, status.COMPLETED, status.COMPLETED, status.PENDING, status.RUNNING, status.COMPLETED,
                   status.COMPLETED, SUMMARY_ERROR_CHARS, status.FAILED, SUMMARY_ERROR_CHARS, DrillStatus.PASSED,
                   DrillStatus.FAILED]
    cursor.execute(" UNION ALL ".join(branches), params)
    return {row[0]: row[1:] for row in cursor.fetchall()}


def _summary(clinic: Tenant, row: tuple | None, now: datetime) -> ClinicBackupSummary:
    if row is None:
        summary = ClinicBackupSummary(tenant=clinic, has_table=False)
    else:
        (completed, total_size, in_progress, last_ok_at, last_ok_size, last_ok_warnings, last_failed_at, last_failure,
         unsealed, drill_status, drill_at, drill_seconds, drill_error) = row
        summary = ClinicBackupSummary(
            tenant=clinic, has_table=True, completed_count=completed, total_size=int(total_size), in_progress=in_progress,
            unsealed_count=unsealed,
            last_completed_at=last_ok_at, last_completed_size=last_ok_size, last_completed_warnings=json.loads(last_ok_warnings or "[]"),
            last_failed_at=last_failed_at, last_failure=last_failure or "", last_drill_status=drill_status or "",
            last_drill_at=drill_at, last_drill_seconds=drill_seconds, last_drill_error=drill_error or "",
        )
    overdue = backup_is_overdue(last_completed_at=summary.last_completed_at, clinic_created_at=clinic.created_at,
                                now=now, after=settings.BACKUP_OVERDUE_AFTER)
    return replace(summary, overdue=overdue)
