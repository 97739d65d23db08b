"""Alerts that reach a person, without a bad night becoming two thousand emails.

1. `alert_raise` (a failed backup, one missing files, an overdue clinic, a failed drill,
   operations the reaper cleaned up) records the alert once per kind, clinic and day
   (TIME_ZONE): the same kind for the same clinic again that day only counts a repeat.
2. The first alert of a kind that day is a message of its own, sent at once. The others of
   that kind that day (other clinics) wait for a digest: one message for all of them, sent
   by `alerts_flush` once the oldest has waited BACKUP_ALERT_DIGEST_MINUTES, or at once
   when the night's backups have all ended (alertas.nights); one resolved meanwhile is left out.
3. A message is one email to BACKUP_ALERT_EMAILS (Django's mail settings) and one JSON POST
   to BACKUP_ALERT_WEBHOOK_URL; a channel left unset is `off`. A channel that fails is
   logged and retried by `alerts_flush` (backoff doubling from BACKUP_ALERT_RETRY_SECONDS,
   BACKUP_ALERT_MAX_ATTEMPTS tries), each channel on its own: an email already sent is
   never sent twice because the webhook failed.
4. Every alert is in its clinic's audit log the first time it is raised that day.
5. `alerts_resolve` closes a clinic's open alerts of some kinds (a backup or drill that
   passed): the platform page shows the open ones.
Nothing here ever raises into its caller: an alert that cannot be recorded or sent is
logged, and the backup, drill or reap that raised it goes on as if it had been sent.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from alertas.delivery import DeliveryError, email_send, webhook_post
from alertas.models import Alert, AlertKind, AlertMessage, DeliveryState
from bitacora.services import AuditContext, record

logger = logging.getLogger(__name__)
CONTEXT = AuditContext.system("alertas")
_KIND_LOCK = 0x0C14  # advisory lock namespace: one decision at a time per kind (who is first today)
LEASE = timedelta(minutes=5)  # a delivery in progress; another process may take the message after it
LISTED = 50  # clinics a message names one by one (the count is always there)
PLATFORM_PAGE_PATH = "/admin/plataforma/backups/"  # core.urls_public


def alert_raise(*, kind: str, schema: str, clinic: str, summary: str, details: dict | None = None) -> Alert | None:
    """Record an alert (steps 1, 2, 4) and send it if it is the first of its kind today; never raises."""
    try:
        alert, message, first_today = _alert_record(kind=kind, schema=schema, clinic=clinic, summary=summary,
                                                    details=details or {})
        if first_today:
            record(context=CONTEXT, action=f"alert.{kind}", target_type="alert", target_id=alert.pk, schema=schema,
                   details={"summary": summary, "delivery": alert.delivery, **(details or {})})
        if message is not None:
            transaction.on_commit(lambda: _deliver(message.pk))
        return alert
    except Exception:
        logger.exception("alert %s of %s could not be recorded", kind, schema)
        return None


def _alert_record(*, kind, schema, clinic, summary, details) -> tuple[Alert, AlertMessage | None, bool]:
    now = timezone.now()
    day = timezone.localdate(now)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_KIND_LOCK, kind])
        existing = Alert.objects.select_for_update().filter(kind=kind, schema=schema, day=day).first()
        if existing is not None:
            Alert.objects.filter(pk=existing.pk).update(repeats=existing.repeats + 1, last_seen_at=now, resolved_at=None,
                                                        summary=summary, details=details)
            return existing, None, False
        first = not Alert.objects.filter(kind=kind, day=day, delivery=Alert.Delivery.AT_ONCE).exists()
        alert = Alert.objects.create(kind=kind, schema=schema, clinic=clinic, day=day, summary=summary, details=details,
                                     delivery=Alert.Delivery.AT_ONCE if first else Alert.Delivery.DIGEST, created_at=now,
                                     last_seen_at=now)
        message = _message_for(kind, [alert], digest=False) if first else None
        return alert, message, True


def alerts_resolve(*, schema: str, kinds: list[str]) -> int:
    """Close the clinic's open alerts of these kinds: what they said is no longer true."""
    try:
        return Alert.objects.filter(schema=schema, kind__in=kinds, resolved_at=None).update(resolved_at=timezone.now())
    except Exception:
        logger.exception("alerts of %s could not be resolved", schema)
        return 0


# -- messages


def platform_page_url() -> str:
    """The platform page's link in a message: absolute when BACKUP_PLATFORM_URL says where the web
    service is (the worker that sends it cannot know), else its path."""
    return settings.BACKUP_PLATFORM_URL.rstrip("/") + PLATFORM_PAGE_PATH


def _message_for(kind: str, alerts: list[Alert], *, digest: bool) -> AlertMessage:
    label = AlertKind(kind).label
    if digest:
        subject = _("[Backups] %(kind)s: más clínicas desde el primer aviso (%(count)d)") % {"kind": label, "count": len(alerts)}
        intro = _("Desde el primer aviso de hoy, el mismo problema en estas clínicas:")
    else:
        subject = _("[Backups] %(kind)s: %(clinic)s") % {"kind": label, "clinic": alerts[0].clinic or alerts[0].schema}
        intro = _("Una clínica necesita atención:")
    lines = [f"- {alert.clinic} ({alert.schema}): {alert.summary}" for alert in alerts[:LISTED]]
    if len(alerts) > LISTED:
        lines.append(_("… y %(count)d más.") % {"count": len(alerts) - LISTED})
    body = "\n".join([intro, "", *lines, "", _("Página de la plataforma: %(url)s") % {"url": platform_page_url()}]) + "\n"
    payload = {"event": "clinica.backups.alert", "kind": kind, "digest": digest, "subject": subject, "count": len(alerts),
               "alerts": [{"kind": alert.kind, "schema": alert.schema, "clinic": alert.clinic, "summary": alert.summary,
                           "details": alert.details, "day": alert.day.isoformat(), "at": alert.created_at.isoformat()}
                          for alert in alerts[:LISTED]]}
    message = AlertMessage.objects.create(
        kind=kind, digest=digest, subject=subject[:255], body=body, payload=payload,
        email_state=DeliveryState.PENDING if settings.BACKUP_ALERT_EMAILS else DeliveryState.OFF,
        webhook_state=DeliveryState.PENDING if settings.BACKUP_ALERT_WEBHOOK_URL else DeliveryState.OFF,
    )
    Alert.objects.filter(pk__in=[alert.pk for alert in alerts]).update(message=message)
    return message


def _claim(message_id: int, now: datetime) -> AlertMessage | None:
    """The message, leased to this process for its delivery; None if another has it or nothing is pending."""
    due = AlertMessage.objects.filter(pk=message_id).exclude(next_attempt_at__gt=now)
    pending = due.filter(email_state=DeliveryState.PENDING) | due.filter(webhook_state=DeliveryState.PENDING)
    if not pending.update(next_attempt_at=now + LEASE):
        return None
    return AlertMessage.objects.get(pk=message_id)


def _deliver(message_id: int) -> None:
    """Step 3: each pending channel once; a failure is logged and scheduled again."""
    now = timezone.now()
    message = _claim(message_id, now)
    if message is None:
        return
    errors = []
    if message.email_state == DeliveryState.PENDING:
        try:
            email_send(subject=message.subject, body=message.body, recipients=list(settings.BACKUP_ALERT_EMAILS))
            message.email_state = DeliveryState.SENT
        except DeliveryError as exc:
            errors.append(str(exc))
    if message.webhook_state == DeliveryState.PENDING:
        try:
            webhook_post(url=settings.BACKUP_ALERT_WEBHOOK_URL, payload=message.payload)
            message.webhook_state = DeliveryState.SENT
        except DeliveryError as exc:
            errors.append(str(exc))
    message.next_attempt_at = None
    if errors:
        message.attempts += 1
        message.last_error = "; ".join(errors)
        if message.attempts >= settings.BACKUP_ALERT_MAX_ATTEMPTS:
            for channel in ("email_state", "webhook_state"):
                if getattr(message, channel) == DeliveryState.PENDING:
                    setattr(message, channel, DeliveryState.GIVEN_UP)
        else:
            message.next_attempt_at = now + timedelta(seconds=settings.BACKUP_ALERT_RETRY_SECONDS * 2 ** (message.attempts - 1))
        logger.warning("alert message %s (%s) not delivered, attempt %s: %s", message.pk, message.kind, message.attempts,
                       message.last_error)
    message.save(update_fields=["email_state", "webhook_state", "attempts", "next_attempt_at", "last_error"])


# -- what waits: digests and retries


def alerts_flush(*, digest_now: bool = False) -> dict:
    """Send the digests that are due (all of them with digest_now) and retry failed deliveries."""
    now = timezone.now()
    digests = []
    waiting = Alert.objects.filter(delivery=Alert.Delivery.DIGEST, message=None, resolved_at=None)
    for kind in waiting.values_list("kind", flat=True).distinct():
        message = _digest_of(kind, now, digest_now)
        if message is not None:
            digests.append(message.pk)
            _deliver(message.pk)
    retried = []
    pending = AlertMessage.objects.filter(email_state=DeliveryState.PENDING) | AlertMessage.objects.filter(
        webhook_state=DeliveryState.PENDING)
    for message_id in pending.exclude(next_attempt_at__gt=now).values_list("pk", flat=True):
        _deliver(message_id)
        retried.append(message_id)
    return {"digests": digests, "retried": retried}


def _digest_of(kind: str, now: datetime, digest_now: bool) -> AlertMessage | None:
    with transaction.atomic():
        # One resolved meanwhile (a backup that passed since) needs nobody any more: it is not sent.
        waiting = list(Alert.objects.select_for_update(skip_locked=True)
                       .filter(kind=kind, delivery=Alert.Delivery.DIGEST, message=None, resolved_at=None)
                       .order_by("created_at", "id"))
        due = now - timedelta(minutes=settings.BACKUP_ALERT_DIGEST_MINUTES)
        if not waiting or not (digest_now or waiting[0].created_at <= due):
            return None
        return _message_for(kind, waiting, digest=True)
