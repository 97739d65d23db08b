"""Which clinics are drilled each night (backups.drills.plan): a table of histories and the
exact plan, and the spread over 10,000 clinics."""
from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone

import pytest

from backups.drills.plan import DrillCandidate, drill_night_of, drill_plan

pytestmark = pytest.mark.no_test_db
NIGHT = date(2026, 12, 7)
EVERY = 7


def _on(days_before: int) -> datetime:
    return datetime.combine(NIGHT - timedelta(days=days_before), datetime.min.time(), tzinfo=timezone.utc)


def _tonights(schema_prefix: str, *, tonight: bool) -> str:
    """A clinic name whose own night is (or is not) tonight."""
    wanted = NIGHT.toordinal() % EVERY
    return next(name for index in range(1000) if (drill_night_of(name := f"{schema_prefix}{index}", EVERY) == wanted) == tonight)


@pytest.mark.parametrize("candidate, drilled", [
    # its own night: drilled, whether drilled yesterday or never
    (DrillCandidate(_tonights("a", tonight=True), has_backup=True, last_drilled_at=None), True),
    (DrillCandidate(_tonights("b", tonight=True), has_backup=True, last_drilled_at=_on(1)), True),
    # another night: only if its last drill is EVERY days old or more (a missed night)
    (DrillCandidate(_tonights("c", tonight=False), has_backup=True, last_drilled_at=None), False),
    (DrillCandidate(_tonights("d", tonight=False), has_backup=True, last_drilled_at=_on(EVERY - 1)), False),
    (DrillCandidate(_tonights("e", tonight=False), has_backup=True, last_drilled_at=_on(EVERY)), True),
    (DrillCandidate(_tonights("f", tonight=False), has_backup=True, last_drilled_at=_on(30)), True),
    # nothing to drill without a completed backup
    (DrillCandidate(_tonights("g", tonight=True), has_backup=False, last_drilled_at=None), False),
    (DrillCandidate(_tonights("h", tonight=False), has_backup=False, last_drilled_at=_on(30)), False),
])
def test_a_clinic_is_drilled_on_its_night_or_once_its_last_drill_is_old(candidate, drilled):
    assert drill_plan([candidate], night=NIGHT, every_days=EVERY) == ([candidate.schema] if drilled else [])


def test_ten_thousand_clinics_are_each_drilled_once_a_week_about_a_seventh_a_night():
    # given 10,000 clinics drilled on their own nights only (each drill passes)
    clinics = {f"clinica_{index:05d}": None for index in range(10_000)}
    per_night = []
    for day in range(3 * EVERY):
        night = NIGHT + timedelta(days=day)
        candidates = [DrillCandidate(schema, True, last) for schema, last in clinics.items()]
        due = drill_plan(candidates, night=night, every_days=EVERY)
        per_night.append(len(due))
        for schema in due:
            clinics[schema] = datetime.combine(night, datetime.min.time(), tzinfo=timezone.utc)
        # then no clinic's last drill is ever a week old once its first night has passed
        if day >= EVERY - 1:
            assert all(last is not None and (night - last.date()).days < EVERY for last in clinics.values())
    # and every night drills about a seventh of them (within 5 %), each clinic once in any 7 nights
    assert all(abs(count - 10_000 / EVERY) < 0.05 * 10_000 / EVERY for count in per_night), per_night
    assert sum(per_night[EVERY:2 * EVERY]) == 10_000
    assert Counter(drill_night_of(schema, EVERY) for schema in clinics).keys() == set(range(EVERY))
