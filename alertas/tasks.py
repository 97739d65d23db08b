"""Celery jobs of the alerts: what waits is sent (digests, retries, heartbeat pings).
Bound to core.celery's app, as backups.tasks."""
from __future__ import annotations

from alertas.nights import night_pings_retry
from alertas.services import alerts_flush
from core.celery import app


@app.task(name="alertas.tasks.alerts_flush_task")
def alerts_flush_task() -> dict:
    return {**alerts_flush(), "pings": night_pings_retry()}
