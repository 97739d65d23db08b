"""Celery jobs of the alerts: what waits is sent (digests, retries, heartbeat pings)."""
from __future__ import annotations

from celery import shared_task

from alertas.nights import night_pings_retry
from alertas.services import alerts_flush


@shared_task(name="alertas.tasks.alerts_flush_task")
def alerts_flush_task() -> dict:
    return {**alerts_flush(), "pings": night_pings_retry()}
