"""How an alert leaves the service: Django's mail settings, a JSON POST, a heartbeat ping.
Adapters: each raises on failure (the caller logs and retries), none knows a model."""
from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMessage

# A receiver that hangs must not hold a backup's worker: every call is bounded.
TIMEOUT_SECONDS = 10


class DeliveryError(Exception):
    """A channel refused or failed a delivery; its text says which and why (never a secret)."""


def email_send(*, subject: str, body: str, recipients: list[str]) -> None:
    """One plain-text email through EMAIL_HOST/EMAIL_PORT (Django's mail settings)."""
    message = EmailMessage(subject=subject, body=body, from_email=settings.BACKUP_ALERT_FROM_EMAIL, to=recipients)
    try:
        sent = message.send(fail_silently=False)
    except Exception as exc:  # smtplib, socket and SSL errors alike
        raise DeliveryError(f"email: {type(exc).__name__}") from exc
    if sent != 1:
        raise DeliveryError("email: not sent")


def webhook_post(*, url: str, payload: dict) -> None:
    """One JSON POST; any answer but 2xx is a failure."""
    _request("webhook", "POST", url, json=payload)


def heartbeat_ping(*, url: str, suffix: str = "") -> None:
    """A healthchecks.io-style ping: `<url>` (success), `<url>/start`, `<url>/fail`."""
    _request("heartbeat", "GET", f"{url.rstrip('/')}/{suffix}" if suffix else url)


def _request(channel: str, method: str, url: str, **options) -> None:
    # httpx (and the CLI libraries it pulls in) loads with the first delivery, not with every
    # command and worker that imports the alerts.
    import httpx

    try:
        response = httpx.request(method, url, timeout=TIMEOUT_SECONDS, **options)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{channel}: {type(exc).__name__}") from exc
    if not response.is_success:
        raise DeliveryError(f"{channel}: HTTP {response.status_code}")
