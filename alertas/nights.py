"""The night's heartbeat: healthchecks.io-style pings to BACKUP_HEARTBEAT_URL, so that a night
that goes wrong, or never starts, is noticed by something outside the service.

1. `night_start`: the cron queues the night's backups (`create_backup --all-tenants --type
   automatic`): a NightRun expecting one job per clinic, and `<url>/start`.
2. `night_job_ended`: each clinic's job, however it ends (completed, failed, refused when
   queued, or failed by the reaper as interrupted), ends its row once (a message delivered
   twice does not count twice).
3. When every expected job has ended, the night is finished once (whoever ends the last job
   claims it): `<url>` if none failed, else `<url>/fail`, and the day's waiting alert
   digests go out (alertas.services) rather than hours later.
A start that never gets its success or fail within the checker's grace time is the checker's
alert: a cron that did not run, a worker that never took the jobs. A ping that cannot be sent
is logged and kept on the night (`ping_pending`) for alerts_flush to retry.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from alertas.delivery import DeliveryError, heartbeat_ping
from alertas.models import NightRun, NightRunJob
from alertas.services import alerts_flush

logger = logging.getLogger(__name__)
START, SUCCESS, FAIL = "start", "success", "fail"


def _ping(night: NightRun, which: str) -> None:
    if not settings.BACKUP_HEARTBEAT_URL:
        return
    try:
        heartbeat_ping(url=settings.BACKUP_HEARTBEAT_URL, suffix="" if which == SUCCESS else which)
        pending = ""
    except DeliveryError as exc:
        logger.warning("heartbeat %s of night %s not sent: %s", which, night.pk, exc)
        pending = which
    NightRun.objects.filter(pk=night.pk).update(ping_pending=pending)


def night_start(*, expected: int) -> NightRun:
    """Step 1: the night, and its start ping."""
    night = NightRun.objects.create(expected=expected)
    _ping(night, START)
    _night_finish_if_done(night.pk)  # no clinic at all: a night with nothing to do is done
    return night


def night_job_queued(*, night_id: int, schema: str, backup_id: int) -> None:
    """A clinic's job is queued: its backup, so the reaper can end it if it dies."""
    NightRunJob.objects.update_or_create(night_id=night_id, schema=schema, defaults={"backup_id": backup_id})


def night_job_ended(*, night_id: int, schema: str, ok: bool, backup_id: int | None = None) -> None:
    """Step 2, and step 3 when it was the last; never raises into the backup that called it."""
    try:
        now = timezone.now()
        try:
            with transaction.atomic():
                NightRunJob.objects.create(night_id=night_id, schema=schema, backup_id=backup_id, ended_at=now, ok=ok)
        except IntegrityError:  # queued before, or ended already: the first end counts
            NightRunJob.objects.filter(night_id=night_id, schema=schema, ended_at=None).update(ended_at=now, ok=ok)
        _night_finish_if_done(night_id)
    except Exception:
        logger.exception("night %s: the end of %s's job could not be recorded", night_id, schema)


def night_backup_ended(*, schema: str, backup_id: int, ok: bool) -> None:
    """Step 2 for a backup whose night the caller does not know (the reaper failing it as interrupted)."""
    try:
        jobs = NightRunJob.objects.filter(schema=schema, backup_id=backup_id, ended_at=None)
        for night_id in jobs.values_list("night_id", flat=True):
            night_job_ended(night_id=night_id, schema=schema, ok=ok, backup_id=backup_id)
    except Exception:
        logger.exception("nights: the end of backup %s of %s could not be recorded", backup_id, schema)


def _night_finish_if_done(night_id: int) -> None:
    night = NightRun.objects.get(pk=night_id)
    ended = NightRunJob.objects.filter(night_id=night_id).exclude(ended_at=None)
    if night.finished_at is not None or ended.count() < night.expected:
        return
    failed = ended.filter(ok=False).count()
    outcome = NightRun.Outcome.FAIL if failed else NightRun.Outcome.OK
    # One finisher: the update that sets finished_at on a night that had none.
    if not NightRun.objects.filter(pk=night_id, finished_at=None).update(finished_at=timezone.now(), outcome=outcome,
                                                                           failed=failed):
        return
    _ping(night, FAIL if failed else SUCCESS)
    alerts_flush(digest_now=True)


def night_pings_retry() -> list[int]:
    """The pings that could not be sent, again (alerts_flush's periodic task calls this)."""
    retried = []
    for night in NightRun.objects.exclude(ping_pending=""):
        _ping(night, night.ping_pending)
        retried.append(night.pk)
    return retried
