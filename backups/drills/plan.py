"""Which clinics to drill tonight (step 0 of backups.drills' map): a pure plan, as retention's,
and `drills_due`, which feeds it every clinic's summary.

Every clinic is drilled at least every BACKUP_DRILL_EVERY_DAYS (N) days, spread over the
nights: a hash of its name gives it one night in N, so about 1/N of the clinics are drilled
each night. A clinic whose last drill (passed or failed) is N days old or more is drilled
tonight too, whatever its night (a night that did not run, a backup that was missing then).
A clinic with no completed backup has nothing to drill. An interrupted drill proves nothing:
it does not count as one.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.utils import timezone

from backups.selectors import backup_summary_list
from core.models import Tenant


@dataclass(frozen=True)
class DrillCandidate:
    schema: str
    has_backup: bool
    last_drilled_at: datetime | None  # the last drill that passed or failed


def drill_night_of(schema: str, every_days: int) -> int:
    """The clinic's night among every_days, stable across runs and processes (not Python's hash())."""
    return int(hashlib.sha256(schema.encode()).hexdigest()[:8], 16) % every_days


def drill_plan(candidates: list[DrillCandidate], *, night: date, every_days: int) -> list[str]:
    """The schemas to drill on `night` (a local date), in the given order."""
    tonight = night.toordinal() % every_days
    due = []
    for candidate in candidates:
        if not candidate.has_backup:
            continue
        overdue = candidate.last_drilled_at is not None and (night - candidate.last_drilled_at.date()).days >= every_days
        if overdue or drill_night_of(candidate.schema, every_days) == tonight:
            due.append(candidate.schema)
    return due


def drills_due(*, night: date | None = None) -> list[Tenant]:
    """The active clinics to drill on `night` (today, in TIME_ZONE): the plan applied to every clinic's summary."""
    summaries = backup_summary_list()
    candidates = [DrillCandidate(schema=summary.tenant.schema_name, has_backup=summary.completed_count > 0,
                                 last_drilled_at=summary.last_drill_at) for summary in summaries]
    due = set(drill_plan(candidates, night=night or timezone.localdate(), every_days=settings.BACKUP_DRILL_EVERY_DAYS))
    return [summary.tenant for summary in summaries if summary.tenant.schema_name in due]
