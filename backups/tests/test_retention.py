from datetime import datetime, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command

from backups.errors import RetentionPolicyError
from backups.models import BackupRecord
from backups.retention import (
    BackupRow,
    RetentionPolicy,
    backup_prune,
    retention_plan,
    retention_policy_for,
)
from backups.tests.factories import stored_backup
from bitacora.models import Bitacora
from bitacora.services import AuditContext

UTC = dt_timezone.utc
# A Sunday: ISO week 2025-W24 runs from Monday 9 to Sunday 15 June.
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
ONLY = dict(keep_last=0, daily=0, weekly=0, monthly=0, min_completed=0)


def at(text: str, tz=UTC) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=tz)


def nightly(last: str, days: int) -> list[tuple[str, ...]]:
    """One completed backup at 03:00 on each of `days` days ending on `last`."""
    end = datetime.strptime(last, "%Y-%m-%d")
    return [((end - timedelta(days=offset)).strftime("%Y-%m-%d 03:00"),) for offset in range(days)]


# Each history entry: (created_at, *flags) with flags among "failed", "running", "keep".
# Listed in no particular order on purpose: only created_at may order them.
CASES = [
    pytest.param(RetentionPolicy(), NOW, [], set(), id="empty-history"),
    pytest.param(
        RetentionPolicy(),  # keep_last 7, daily 7, weekly 4, monthly 6, min 3
        NOW,
        nightly("2025-06-15", 60),
        {
            *[f"2025-06-{day:02d} 03:00" for day in range(9, 16)],  # last 7 and the 7 days
            "2025-06-08 03:00", "2025-06-01 03:00", "2025-05-25 03:00",  # newest of W23, W22, W21
            "2025-05-31 03:00", "2025-04-30 03:00",  # newest of May and April (nothing older exists)
        },
        id="sixty-nightlies-default-policy",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "keep_last": 3}),
        NOW,
        [("2025-06-14 03:00",), ("2025-06-15 09:00",), ("2025-06-10 03:00",), ("2025-06-15 03:00",), ("2025-06-12 03:00",)],
        {"2025-06-15 09:00", "2025-06-15 03:00", "2025-06-14 03:00"},
        id="keep-last-orders-by-created-at-only",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "daily": 2}),
        NOW,
        [("2025-06-15 03:00",), ("2025-06-15 09:00",), ("2025-06-14 03:00",), ("2025-06-14 20:00",), ("2025-06-13 23:59",)],
        {"2025-06-15 09:00", "2025-06-14 20:00"},
        id="daily-keeps-the-newest-of-each-day",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "daily": 7}),
        NOW,
        [("2025-06-15 03:00",), ("2025-06-11 03:00",), ("2025-06-09 03:00",), ("2025-06-08 03:00",), ("2025-06-01 03:00",)],
        {"2025-06-15 03:00", "2025-06-11 03:00", "2025-06-09 03:00"},
        id="daily-counts-calendar-days-not-days-with-backups",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "weekly": 2}),
        datetime(2026, 1, 2, 12, 0, tzinfo=UTC),  # a Friday of 2026-W01, which began Monday 29 December 2025
        [("2026-01-01 03:00",), ("2025-12-29 03:00",), ("2025-12-28 03:00",), ("2025-12-22 03:00",), ("2025-12-21 03:00",)],
        {"2026-01-01 03:00", "2025-12-28 03:00"},
        id="weekly-uses-iso-weeks-across-the-new-year",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "monthly": 3}),
        NOW,
        [("2025-06-02 03:00",), ("2025-05-10 03:00",), ("2025-05-20 03:00",), ("2025-04-01 03:00",), ("2025-03-31 23:00",)],
        {"2025-06-02 03:00", "2025-05-20 03:00", "2025-04-01 03:00"},
        id="monthly-keeps-the-newest-of-each-of-the-last-months",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "min_completed": 2}),
        NOW,
        [("2025-01-01 03:00",), ("2025-02-01 03:00",), ("2025-03-01 03:00",), ("2025-03-02 03:00",), ("2025-06-15 03:00", "failed")],
        {"2025-03-02 03:00", "2025-03-01 03:00", "2025-06-15 03:00"},
        id="minimum-completed-ignores-failures-and-keeps-a-young-failure",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "keep_last": 1, "min_completed": 2}),
        NOW,
        [("2025-06-15 03:00",), ("2024-01-01 03:00", "keep"), ("2025-06-14 03:00",), ("2025-06-13 03:00",)],
        {"2025-06-15 03:00", "2024-01-01 03:00"},
        id="keep-marked-survives-and-counts-towards-the-minimum",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "keep_last": 2}),
        NOW,
        [
            ("2025-06-15 11:00", "failed"),  # an hour old: kept to look at its error
            ("2025-06-14 11:00", "failed"),  # a day old: cleaned up
            ("2025-06-10 03:00", "failed"),
            ("2025-05-01 03:00", "failed", "keep"),
            ("2025-06-13 03:00",),
            ("2025-06-12 03:00",),
            ("2025-06-11 03:00",),
        ],
        {"2025-06-15 11:00", "2025-05-01 03:00", "2025-06-13 03:00", "2025-06-12 03:00"},
        id="failures-do-not-count-as-last-and-go-after-a-day",
    ),
    pytest.param(
        RetentionPolicy(**ONLY),
        NOW,
        [("2025-06-15 11:59", "running"), ("2025-01-01 03:00", "running"), ("2025-06-15 03:00",)],
        {"2025-06-15 11:59", "2025-01-01 03:00"},
        id="running-is-never-deleted-even-when-stuck",
    ),
    pytest.param(
        RetentionPolicy(**{**ONLY, "daily": 2}),
        datetime(2025, 6, 15, 8, 0, tzinfo=ZoneInfo("America/La_Paz")),  # 12:00 UTC
        # 02:00 UTC on the 15th is still the 14th in La Paz (UTC-4)
        [("2025-06-15 02:00",), ("2025-06-14 20:00",), ("2025-06-13 05:00",)],
        {"2025-06-15 02:00"},
        id="days-are-those-of-now-s-time-zone",
    ),
]


@pytest.mark.parametrize(("policy", "now", "history", "expected"), CASES)
def test_retention_plan_keeps_exactly(policy, now, history, expected):
    # given a history of backups, ids unrelated to their dates
    rows = [
        BackupRow(
            id=1000 - index,
            created_at=at(created_at),
            status="failed" if "failed" in flags else "running" if "running" in flags else "completed",
            keep="keep" in flags,
        )
        for index, (created_at, *flags) in enumerate(history)
    ]
    by_id = {row.id: row for row in rows}
    # when the policy is applied
    plan = retention_plan(backups=rows, policy=policy, now=now)
    # then it keeps exactly the expected ones, deletes the rest, oldest first
    kept = {by_id[backup_id].created_at.strftime("%Y-%m-%d %H:%M") for backup_id in plan.keep}
    assert kept == expected
    assert set(plan.keep) | set(plan.delete) == set(by_id) and not set(plan.keep) & set(plan.delete)
    assert [by_id[backup_id].created_at for backup_id in plan.delete] == sorted(by_id[i].created_at for i in plan.delete)


def test_retention_plan_says_why_each_backup_is_kept():
    # given
    rows = [
        BackupRow(id=1, created_at=at("2025-06-15 03:00"), status="completed"),
        BackupRow(id=2, created_at=at("2025-05-01 03:00"), status="completed", keep=True),
        BackupRow(id=3, created_at=at("2025-06-15 11:00"), status="running"),
    ]
    policy = RetentionPolicy(keep_last=1, daily=1, weekly=1, monthly=1, min_completed=0)
    # when
    plan = retention_plan(backups=rows, policy=policy, now=NOW)
    # then
    assert plan.keep == {
        3: "en curso",
        1: "últimos 1, diario 2025-06-15, semanal 2025-W24, mensual 2025-06",
        2: "marcado keep",
    }
    assert plan.delete == []


def test_policy_comes_from_settings_with_the_clinic_s_override(settings):
    # given
    settings.BACKUP_RETENTION = {"keep_last": 7, "daily": 7, "weekly": 4, "monthly": 6, "min_completed": 3}
    settings.BACKUP_RETENTION_OVERRIDES = {"test_a": {"monthly": 12}, "test_b": {"mensual": 1}, "test_c": {"daily": -1}}
    # when / then
    assert retention_policy_for("test_a") == RetentionPolicy(keep_last=7, daily=7, weekly=4, monthly=12, min_completed=3)
    assert retention_policy_for("otra") == RetentionPolicy()
    with pytest.raises(RetentionPolicyError):
        retention_policy_for("test_b")
    with pytest.raises(RetentionPolicyError):
        retention_policy_for("test_c")


def test_prune_command_dry_run_lists_and_apply_deletes_objects_and_records(tenant_a, backups_dir, settings, capsys):
    # given a clinic with only these backups, and a policy keeping the newest two
    settings.BACKUP_RETENTION = {**ONLY, "keep_last": 2}
    settings.BACKUP_RETENTION_OVERRIDES = {}
    BackupRecord.objects.all().delete()
    newest, second, third, fourth = (stored_backup(age=timedelta(days=days, hours=1)) for days in range(1, 5))
    pinned = stored_backup(age=timedelta(days=30), keep=True)
    stuck = stored_backup(age=timedelta(days=40), status="running", stored=False)
    doomed = [third, fourth]
    survivors = [newest, second, pinned, stuck]
    # when the command runs without --apply
    call_command("prune_backups", "--tenant", "test_a")
    # then it says what it would delete and why it keeps the others, and deletes nothing
    out = capsys.readouterr().out
    for backup in doomed:
        assert f"se borraría  {backup.pk:>6}" in out
    assert "marcado keep" in out and "en curso" in out and "últimos 2" in out
    assert "simulación" in out
    assert BackupRecord.objects.filter(pk__in=[b.pk for b in doomed + survivors]).count() == 6
    assert all((backups_dir / backup.file_path).exists() for backup in doomed)
    assert not Bitacora.objects.filter(action="backup.delete", target_id__in=[str(b.pk) for b in doomed]).exists()

    # when it runs with --apply
    call_command("prune_backups", "--tenant", "test_a", "--apply")
    # then the objects and records are gone, each deletion audited; the others remain
    assert not BackupRecord.objects.filter(pk__in=[b.pk for b in doomed]).exists()
    assert not any((backups_dir / backup.file_path).exists() for backup in doomed)
    entries = Bitacora.objects.filter(action="backup.delete", target_id__in=[str(b.pk) for b in doomed])
    assert sorted(entry.target_id for entry in entries) == sorted(str(b.pk) for b in doomed)
    assert {entry.outcome for entry in entries} == {"ok"}
    assert {entry.actor_email for entry in entries} == {"manage.py prune_backups"}
    assert set(BackupRecord.objects.values_list("pk", flat=True)) == {b.pk for b in survivors}
    assert (backups_dir / pinned.file_path).exists()


def test_prune_removes_failed_records_older_than_a_day_and_keeps_younger_ones(tenant_a, backups_dir):
    # given one completed backup and two failed ones without objects, one old and one recent
    BackupRecord.objects.all().delete()
    completed = stored_backup(age=timedelta(days=3))
    old_failure = stored_backup(age=timedelta(days=1, minutes=5), status="failed", stored=False)
    young_failure = stored_backup(age=timedelta(hours=23), status="failed", stored=False)
    # when pruning is applied
    plan = backup_prune(context=AuditContext.system("test"), apply=True, policy=RetentionPolicy())
    # then only the old failure is gone, its deletion audited
    assert plan.delete == [old_failure.pk]
    assert set(BackupRecord.objects.values_list("pk", flat=True)) == {completed.pk, young_failure.pk}
    assert Bitacora.objects.filter(action="backup.delete", target_id=str(old_failure.pk), outcome="ok").exists()
