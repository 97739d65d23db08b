"""Retention of backups: which to keep (grandfather-father-son) and which to delete.

`retention_plan` is the policy as a pure function of plain rows, a policy and a
moment; `backup_prune` reads this clinic's records, resolves its policy from the
settings and, when asked to, deletes through `backup_delete` (so every deletion
is audited, object first and then record).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import Any, Iterable, Mapping

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy as _

from backups.errors import BackupPruneError, RetentionPolicyError
from backups.models import BackupRecord
from backups.services import backup_delete
from bitacora.services import AuditContext
from core.exceptions import DomainError
from core.locks import tenant_operation_lock

logger = logging.getLogger(__name__)

COMPLETED = BackupRecord.Status.COMPLETED.value
FAILED = BackupRecord.Status.FAILED.value
RUNNING = BackupRecord.Status.RUNNING.value


@dataclass(frozen=True)
class RetentionPolicy:
    """How many completed backups survive: the newest N plus one per day, ISO week and month."""

    keep_last: int = 7
    daily: int = 7
    weekly: int = 4
    monthly: int = 6
    min_completed: int = 3
    # Not in the settings: a failed record has no object worth keeping, a day is
    # enough to look at its error.
    failed_max_age: timedelta = timedelta(days=1)

    def __post_init__(self):
        for name in ("keep_last", "daily", "weekly", "monthly", "min_completed"):
            value = getattr(self, name)
            # bool is an int; `"keep_last": true` in an env var is a typo, not 1.
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RetentionPolicyError(
                    _("«%(name)s» debe ser un entero no negativo.") % {"name": name}, details={name: value}
                )

    @classmethod
    def from_mapping(cls, *mappings: Mapping[str, Any]) -> "RetentionPolicy":
        """A policy from dicts applied in order (later keys win); unknown keys are an error."""
        known = {f.name for f in fields(cls)} - {"failed_max_age"}
        values: dict[str, Any] = {}
        for mapping in mappings:
            unknown = set(mapping) - known
            if unknown:
                raise RetentionPolicyError(details={"unknown_keys": sorted(unknown)})
            values.update(mapping)
        return cls(**values)


def retention_policy_for(schema_name: str) -> RetentionPolicy:
    """BACKUP_RETENTION, with this clinic's entry of BACKUP_RETENTION_OVERRIDES on top."""
    overrides = getattr(settings, "BACKUP_RETENTION_OVERRIDES", {}) or {}
    override = overrides.get(schema_name, {})
    if not isinstance(override, Mapping):
        raise RetentionPolicyError(details={"schema": schema_name, "override": override})
    return RetentionPolicy.from_mapping(getattr(settings, "BACKUP_RETENTION", {}), override)


@dataclass(frozen=True)
class BackupRow:
    """What the policy needs of a backup, and nothing else."""

    id: int
    created_at: datetime
    status: str
    keep: bool = False


@dataclass(frozen=True)
class RetentionPlan:
    """keep: id → why (every reason, comma separated); delete: ids, oldest first."""

    keep: dict[int, str] = field(default_factory=dict)
    delete: list[int] = field(default_factory=list)


def _last_days(today: date, count: int) -> set[date]:
    return {today - timedelta(days=offset) for offset in range(count)}


def _last_iso_weeks(today: date, count: int) -> set[tuple[int, int]]:
    return {tuple((today - timedelta(weeks=offset)).isocalendar())[:2] for offset in range(count)}


def _last_months(today: date, count: int) -> set[tuple[int, int]]:
    months = set()
    year, month = today.year, today.month
    for _offset in range(count):
        months.add((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


def retention_plan(*, backups: Iterable[BackupRow], policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    """Which backups a policy keeps (and why) and which it deletes, as of `now`.

    Only the recorded `created_at` orders backups (ties: the higher id is newer);
    days, weeks and months are calendar ones in `now`'s time zone, counting the
    current one. A `keep` mark or a `running` status always keeps a backup; a
    failed one is kept only while younger than `failed_max_age`; anything else
    that is not `completed` is left alone.
    """
    rows = sorted(backups, key=lambda row: (row.created_at, row.id), reverse=True)
    reasons: dict[int, list[str]] = {row.id: [] for row in rows}
    completed: list[BackupRow] = []
    for row in rows:
        if row.keep:
            reasons[row.id].append(gettext("marcado keep"))
        if row.status == COMPLETED:
            completed.append(row)
        elif row.status == RUNNING:
            reasons[row.id].append(gettext("en curso"))
        elif row.status == FAILED:
            if now - row.created_at < policy.failed_max_age:
                reasons[row.id].append(gettext("fallido reciente"))
        else:
            # A status this code does not know: deleting it would be a guess.
            reasons[row.id].append(gettext("estado %(status)r") % {"status": row.status})

    for row in completed[: policy.keep_last]:
        reasons[row.id].append(gettext("últimos %(count)s") % {"count": policy.keep_last})

    today = now.date()
    tiers = [
        (gettext("diario"), lambda at: at.date(), _last_days(today, policy.daily), lambda key: key.isoformat()),
        (gettext("semanal"), lambda at: tuple(at.isocalendar())[:2], _last_iso_weeks(today, policy.weekly), lambda key: f"{key[0]}-W{key[1]:02d}"),
        (gettext("mensual"), lambda at: (at.year, at.month), _last_months(today, policy.monthly), lambda key: f"{key[0]}-{key[1]:02d}"),
    ]
    for label, bucket_of, wanted, show in tiers:
        seen = set()
        for row in completed:  # newest first: the first one in a bucket is its newest
            bucket = bucket_of(row.created_at.astimezone(now.tzinfo))
            if bucket in wanted and bucket not in seen:
                seen.add(bucket)
                reasons[row.id].append(f"{label} {show(bucket)}")

    # The floor counts every completed backup that survives, keep-marked ones included.
    surviving = sum(1 for row in completed if reasons[row.id])
    for row in completed:
        if surviving >= policy.min_completed:
            break
        if not reasons[row.id]:
            reasons[row.id].append(gettext("mínimo %(count)s completados") % {"count": policy.min_completed})
            surviving += 1

    keep = {row.id: ", ".join(reasons[row.id]) for row in rows if reasons[row.id]}
    delete = [row.id for row in reversed(rows) if not reasons[row.id]]
    return RetentionPlan(keep=keep, delete=delete)


def backup_prune(
    *,
    context: AuditContext,
    apply: bool,
    policy: RetentionPolicy | None = None,
    now: datetime | None = None,
) -> RetentionPlan:
    """Plan this clinic's retention and, with apply, delete what it does not keep (audited)."""
    policy = policy or retention_policy_for(connection.schema_name)
    now = now or timezone.localtime()
    rows = [BackupRow(**values) for values in BackupRecord.objects.values("id", "created_at", "status", "keep")]
    plan = retention_plan(backups=rows, policy=policy, now=now)
    if not apply or not plan.delete:
        return plan

    # The clinic's lock: no pruning while a backup or a restore (which may be
    # reading one of these objects) is running.
    failed: list[int] = []
    with tenant_operation_lock(connection.schema_name):
        for backup_id in plan.delete:
            # Re-read: someone may have marked it keep or deleted it since the plan.
            current = BackupRecord.objects.filter(pk=backup_id).values("status", "keep").first()
            if current is None or current["keep"] or current["status"] == RUNNING:
                continue
            try:
                backup_delete(context=context, backup_id=backup_id)
            except DomainError:
                # Already audited by backup_delete; the rest still go.
                logger.exception("could not delete backup %s of %s", backup_id, connection.schema_name)
                failed.append(backup_id)
    if failed:
        raise BackupPruneError(details={"failed": failed, "planned": len(plan.delete)})
    return plan
