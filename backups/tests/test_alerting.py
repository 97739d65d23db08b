"""Alerts that reach a person (alertas, backups.alerting): through a real SMTP server and an HTTP
receiver, once per kind and clinic a day, the others of a kind in one digest, every alert in
the clinic's audit log, delivery failures retried without failing anything."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django_tenants.utils import schema_context

from alertas.models import Alert, AlertMessage, DeliveryState, NightRun
from alertas.services import alerts_flush
from backups.alerting import overdue_alerts
from backups.errors import BackupFailedError
from backups.jobs.reaper import reap
from backups.models import BackupRecord
from backups.services import backup_create
from bitacora.models import Bitacora
from bitacora.services import AuditContext

CONTEXT = AuditContext.system("prueba-alertas")


@pytest.fixture
def unwritable_backups(settings, tmp_path):
    """A backups storage that cannot be written to (its location is a file): every backup fails."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    settings.STORAGES = {**settings.STORAGES,
                         "backups": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": blocker}}}


def _failed_backup(schema: str) -> None:
    with schema_context(schema), pytest.raises(BackupFailedError):
        backup_create(context=CONTEXT)


def test_a_failed_backup_is_one_email_and_one_webhook_call_at_once(tenant_a, clinic_data, alert_channels, unwritable_backups,
                                                                   django_capture_on_commit_callbacks):
    smtp, receiver = alert_channels
    # when a backup of clinic A fails
    with django_capture_on_commit_callbacks(execute=True):
        _failed_backup("test_a")
    # then one email reached the SMTP server and one JSON POST the webhook, both naming the clinic
    assert len(smtp.messages) == 1
    email = smtp.messages[0]
    assert email["to"] == ["guardia@plataforma.test"] and "Backup fallido" in email["subject"] and "Clínica A" in email["subject"]
    assert "test_a" in email["body"] and "Página de la plataforma: /admin/plataforma/backups/" in email["body"].splitlines()
    # naming what failed (the storage's error type, not its message), not repeating "El backup falló."
    summary = Alert.objects.get(kind="backup_failed", schema="test_a").summary
    assert summary.startswith("El backup falló: ") and summary.endswith("Error") and "El backup falló." not in summary
    [post] = receiver.posts()
    assert post["path"] == "/hooks/backups" and post["json"]["kind"] == "backup_failed" and post["json"]["digest"] is False
    assert [alert["schema"] for alert in post["json"]["alerts"]] == ["test_a"]
    # and the alert is in the clinic's audit log
    entry = Bitacora.objects.filter(action="alert.backup_failed").order_by("-id").first()
    assert entry is not None and entry.details["delivery"] == "at_once"


def test_a_bad_night_is_a_few_messages_not_one_per_clinic_and_failure(tenants, clinic_data, alert_channels, unwritable_backups,
                                                                      django_capture_on_commit_callbacks, db):
    smtp, receiver = alert_channels
    # given clinic A's backup failed twice today, and clinics B and R once each
    for schema in ("test_a", "test_a", "test_b", "test_restore"):
        with django_capture_on_commit_callbacks(execute=True):
            _failed_backup(schema)
    # then only the first went out; A's second is a repeat, B and R wait for the digest
    assert len(smtp.messages) == 1 and len(receiver.posts()) == 1
    assert Alert.objects.get(schema="test_a").repeats == 1
    assert sorted(Alert.objects.filter(delivery="digest").values_list("schema", flat=True)) == ["test_b", "test_restore"]
    # and a flush before the digest is due sends nothing more
    with django_capture_on_commit_callbacks(execute=True):
        alerts_flush()
    assert len(smtp.messages) == 1
    # when the digest is due, then one more message names both
    with django_capture_on_commit_callbacks(execute=True):
        alerts_flush(digest_now=True)
    assert len(smtp.messages) == 2 and len(receiver.posts()) == 2
    digest = smtp.messages[1]
    assert digest["subject"].endswith("más clínicas desde el primer aviso (2)") and "test_b" in digest["body"] and "test_restore" in digest["body"]
    assert receiver.posts()[1]["json"]["digest"] is True and receiver.posts()[1]["json"]["count"] == 2
    # and each clinic's audit log has its alert, once
    for schema in ("test_a", "test_b", "test_restore"):
        alert = Alert.objects.get(schema=schema)
        with schema_context(schema):
            assert Bitacora.objects.filter(action="alert.backup_failed", target_id=str(alert.pk)).count() == 1


def test_a_delivery_failure_is_logged_and_retried_and_never_fails_the_backup(tenant_a, clinic_data, alert_channels, settings,
                                                                             backups_dir, django_capture_on_commit_callbacks,
                                                                             caplog):
    smtp, receiver = alert_channels
    # given a mail server that is down and a webhook that answers 500
    settings.EMAIL_PORT = _closed_port()
    receiver.status = 500
    # when the clinic is overdue (any clinic: no backup within 0 hours)
    settings.BACKUP_OVERDUE_AFTER = timedelta(0)
    settings.BACKUP_ALERT_RETRY_SECONDS = 0
    with django_capture_on_commit_callbacks(execute=True):
        assert "test_a" in overdue_alerts()
        # and a backup runs meanwhile, then it completes as ever
        assert backup_create(context=CONTEXT).status == BackupRecord.Status.COMPLETED
    # then the failed delivery is logged and scheduled again, per channel
    message = AlertMessage.objects.get()
    assert (message.email_state, message.webhook_state, message.attempts) == (DeliveryState.PENDING, DeliveryState.PENDING, 1)
    assert "email" in message.last_error and "HTTP 500" in message.last_error
    assert any("not delivered" in record.getMessage() for record in caplog.records)
    # when the channels are back and the retry comes, then it is delivered once
    settings.EMAIL_PORT = smtp.port
    receiver.status = 200
    alerts_flush()
    message.refresh_from_db()
    assert (message.email_state, message.webhook_state) == (DeliveryState.SENT, DeliveryState.SENT)
    assert len(smtp.messages) == 1 and len(receiver.posts()) == 2  # the webhook's first try, refused, then this one
    alerts_flush()
    assert len(smtp.messages) == 1


def _closed_port() -> int:
    from alertas.tests.receivers import free_port

    return free_port()


def test_an_overdue_clinic_is_alerted_once_a_day(tenant_a, alert_channels, settings, django_capture_on_commit_callbacks):
    smtp, _receiver = alert_channels
    settings.BACKUP_OVERDUE_AFTER = timedelta(0)
    with django_capture_on_commit_callbacks(execute=True):
        first = overdue_alerts()
        again = overdue_alerts()
    # every clinic overdue: one message at once, the rest wait for the digest; the second look sends nothing
    assert first == again and "test_a" in first
    assert len(smtp.messages) == 1 and "Clínica sin backup reciente" in smtp.messages[0]["subject"]
    assert Alert.objects.filter(kind="backup_overdue").count() == len(first)
    assert set(Alert.objects.values_list("repeats", flat=True)) == {1}


def test_an_overdue_alert_says_its_last_backup_in_the_platforms_time_zone(tenant_a, alert_channels, settings,
                                                                          django_capture_on_commit_callbacks):
    # given a platform in Bogotá (UTC-5) and clinic A's last completed backup at 03:00 UTC, 22:00 there the day before
    settings.TIME_ZONE = "America/Bogota"
    settings.BACKUP_OVERDUE_AFTER = timedelta(hours=1)
    backup = BackupRecord.objects.create(file_name="a.sql.gz", file_path="test_a/manual/a.sql.gz", status="completed")
    BackupRecord.objects.filter(pk=backup.pk).update(created_at=datetime(2026, 1, 10, 3, 0, tzinfo=UTC))
    # when the overdue check alerts it
    with django_capture_on_commit_callbacks(execute=True):
        assert "test_a" in overdue_alerts()
    # then its summary gives the time the platform page shows beside it (Bogotá's), not UTC's
    assert Alert.objects.get(kind="backup_overdue", schema="test_a").summary == "Sin backup completado desde 2026-01-09 22:00."


def test_a_backup_that_completes_resolves_its_clinics_alerts(tenant_a, clinic_data, alert_channels, settings, backups_dir,
                                                             django_capture_on_commit_callbacks):
    settings.BACKUP_OVERDUE_AFTER = timedelta(0)
    with django_capture_on_commit_callbacks(execute=True):
        overdue_alerts()
        backup_create(context=CONTEXT)
    assert Alert.objects.get(schema="test_a").resolved_at is not None
    assert Alert.objects.get(schema="test_b").resolved_at is None


def test_operations_the_reaper_cleaned_up_are_alerted(tenant_a, alert_channels, django_capture_on_commit_callbacks):
    smtp, receiver = alert_channels
    # given a backup left `running` by a dead process, and an operation schema of it
    backup = BackupRecord.objects.create(file_name="x.sql.gz", file_path="test_a/manual/x.sql.gz", status="running")
    with connection.cursor() as cursor:
        cursor.execute('CREATE SCHEMA "test_a__staging_0badc0de"')
    # when the reaper runs
    with django_capture_on_commit_callbacks(execute=True):
        reap()
    # then what it put right for that clinic is an alert
    assert BackupRecord.objects.get(pk=backup.pk).status == "failed"
    alert = Alert.objects.get(kind="operations_reaped", schema="test_a")
    assert alert.details["found"] == {"schemas": 1, "backups": 1}
    assert len(smtp.messages) == 1 and receiver.posts()[0]["json"]["kind"] == "operations_reaped"


# ----------------------------------------------------------------------------- the heartbeat


def test_a_night_pings_start_then_success_once_every_clinics_backup_ended(tenants, clinic_data, alert_channels, backups_dir,
                                                                          django_capture_on_commit_callbacks, db):
    _smtp, receiver = alert_channels
    # when the cron runs the night (no broker: every clinic's job inline)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("create_backup", "--all-tenants", "--type", "automatic", stdout=_Sink(), stderr=_Sink())
    # then the heartbeat got its start, and its success once the last clinic ended
    assert receiver.paths() == ["/ping/noche/start", "/ping/noche"]
    night = NightRun.objects.get()
    assert night.outcome == "ok" and night.jobs.filter(ok=True).count() == night.expected > 0


def test_a_night_with_a_failed_backup_pings_fail_and_sends_the_digest_at_its_end(tenants, clinic_data, alert_channels,
                                                                                  unwritable_backups,
                                                                                  django_capture_on_commit_callbacks, db):
    smtp, receiver = alert_channels
    from django.core.management import CommandError

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(CommandError):
        call_command("create_backup", "--all-tenants", "--type", "automatic", stdout=_Sink(), stderr=_Sink())
    night = NightRun.objects.get()
    # then /fail, and the clinics after the first were in one digest sent when the night ended
    assert receiver.paths() == ["/ping/noche/start", "/ping/noche/fail"]
    assert night.outcome == "fail" and night.failed == night.expected
    assert len(smtp.messages) == (2 if night.expected > 1 else 1)
    assert not Alert.objects.filter(delivery="digest", message=None).exists()


def test_a_night_job_the_reaper_fails_ends_the_night(tenant_a, alert_channels, django_capture_on_commit_callbacks):
    from alertas.nights import night_job_ended, night_job_queued, night_start

    _smtp, receiver = alert_channels
    # given a night of two clinics: B's job ended (twice: a message delivered again), A's worker died mid-backup
    night = night_start(expected=2)
    night_job_ended(night_id=night.pk, schema="test_b", ok=True)
    night_job_ended(night_id=night.pk, schema="test_b", ok=True)
    dead = BackupRecord.objects.create(file_name="y.sql.gz", file_path="test_a/automatic/y.sql.gz", status="running")
    night_job_queued(night_id=night.pk, schema="test_a", backup_id=dead.pk)
    night.refresh_from_db()
    assert night.finished_at is None
    # when the reaper fails A's backup as interrupted
    with django_capture_on_commit_callbacks(execute=True):
        reap()
    # then the night ended, failed, and said so
    night.refresh_from_db()
    assert night.outcome == "fail" and night.failed == 1
    assert receiver.paths() == ["/ping/noche/start", "/ping/noche/fail"]


class _Sink:
    def write(self, *args) -> None:
        pass

    def flush(self) -> None:
        pass


@pytest.mark.committed
def test_a_failed_drill_is_alerted_and_a_passed_one_resolves_it(committed_db, alert_channels, backups_dir):
    from backups.drills.run import drill_run
    from backups.tests.test_drills import _rewrite_dump, _with_first_row

    smtp, receiver = alert_channels
    # given a backup whose rows were changed after its checksums were recorded
    backup = backup_create(context=CONTEXT)
    _rewrite_dump(backup, backups_dir, _with_first_row("clinica_paciente", lambda row: row.replace(b"\t", b"\tX", 1)))
    # when it is drilled (committed: the replay is psql's), then the failure reaches a person
    assert drill_run(context=CONTEXT, backup_id=backup.pk).drill_status == "failed"
    assert len(smtp.messages) == 1 and "Simulacro de restauración fallido" in smtp.messages[0]["subject"]
    assert receiver.posts()[0]["json"]["alerts"][0]["details"]["code"] == "drill_rows_mismatch"
    # and a later drill that passes closes the alert
    assert drill_run(context=CONTEXT, backup_id=backup_create(context=CONTEXT).pk).drill_status == "passed"
    assert Alert.objects.get(kind="drill_failed", schema="test_restore").resolved_at is not None


@pytest.mark.committed
def test_a_backup_that_misses_files_completes_and_is_alerted(committed_db, alert_channels, backups_dir, media_dir, media_files):
    smtp, receiver = alert_channels
    # given a radiograph whose file is gone from the media storage
    lost = media_files(count=1)[0]
    (media_dir / lost.archivo.name).unlink()
    # when the clinic is backed up (committed: the alert is sent as the backup ends)
    backup = backup_create(context=CONTEXT)
    # then the backup completed, with its warning, and a person was told
    assert backup.status == BackupRecord.Status.COMPLETED and backup.warnings
    assert len(smtp.messages) == 1 and "Backup sin todos sus archivos" in smtp.messages[0]["subject"]
    assert backup.file_name in smtp.messages[0]["body"]
    [post] = receiver.posts()
    assert post["json"]["alerts"][0]["details"]["warnings"] == [{"code": "files_missing", "count": 1}]


def test_alerts_check_alerts_overdue_clinics_without_a_worker(tenant_a, alert_channels, settings,
                                                              django_capture_on_commit_callbacks):
    smtp, receiver = alert_channels
    settings.BACKUP_OVERDUE_AFTER = timedelta(0)
    # when the operator's cron (no Celery beat) runs the check, with the digest now
    with django_capture_on_commit_callbacks(execute=True):
        call_command("alerts_check", "--digest", stdout=_Sink())
    # then the first overdue clinic is a message of its own and all the others one digest
    overdue = Alert.objects.filter(kind="backup_overdue").count()
    assert overdue >= 3 and len(smtp.messages) == 2 and len(receiver.posts()) == 2
    [digest] = [post["json"] for post in receiver.posts() if post["json"]["digest"]]
    assert digest["count"] == overdue - 1


def test_a_night_without_clinics_is_done_as_it_starts(tenants, alert_channels, db):
    from alertas.nights import night_start

    _smtp, receiver = alert_channels
    night = night_start(expected=0)
    night.refresh_from_db()
    assert night.outcome == "ok" and receiver.paths() == ["/ping/noche/start", "/ping/noche"]


def test_an_alert_resolved_before_its_digest_is_not_sent(tenant_a, clinic_data, alert_channels, settings, backups_dir,
                                                         django_capture_on_commit_callbacks):
    smtp, _receiver = alert_channels
    # given every clinic overdue (one message at once, the others waiting), then clinic B backed up
    settings.BACKUP_OVERDUE_AFTER = timedelta(0)
    with django_capture_on_commit_callbacks(execute=True):
        first = overdue_alerts()
    at_once = Alert.objects.get(kind="backup_overdue", delivery="at_once").schema
    other = next(schema for schema in ("test_b", "test_a") if schema != at_once)
    with schema_context(other), django_capture_on_commit_callbacks(execute=True):
        backup_create(context=CONTEXT)
    # when the digest goes out, then it names the clinics still overdue, not the one backed up since
    with django_capture_on_commit_callbacks(execute=True):
        alerts_flush(digest_now=True)
    assert len(smtp.messages) == 2
    assert f"({other})" not in smtp.messages[1]["body"]
    assert all(f"({schema})" in smtp.messages[1]["body"] for schema in first if schema not in (at_once, other))


def test_an_alert_email_links_the_platform_page_at_the_web_services_address(tenant_a, clinic_data, alert_channels,
                                                                            unwritable_backups, settings,
                                                                            django_capture_on_commit_callbacks):
    # given the web service's public address, which a worker sending the email cannot know by itself
    settings.BACKUP_PLATFORM_URL = "https://backups.clinicas.example/"
    # when a backup fails
    with django_capture_on_commit_callbacks(execute=True):
        _failed_backup("test_a")
    # then the email links the platform page there, a link an operator can click
    [email] = alert_channels[0].messages
    assert "Página de la plataforma: https://backups.clinicas.example/admin/plataforma/backups/" in email["body"].splitlines()


def test_the_platform_page_path_in_messages_is_the_platform_pages():
    from django.urls import resolve

    from alertas.services import PLATFORM_PAGE_PATH
    assert resolve(PLATFORM_PAGE_PATH, urlconf="core.urls_public").func.__module__.startswith("backups.")
