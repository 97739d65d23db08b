"""Login throttling: failed attempts per client address and per account, in the cache.

Only failures count. A successful login costs an attacker nothing to repeat, and
counting it would lock out a clinic whose whole staff logs in from one address in
the morning. Once a limit is reached every attempt is refused before the password
is checked, so the right password cannot be told from a wrong one until the window
has passed. Counts live in the default cache (CACHE_URL): with several gunicorn
workers only a shared cache (Redis) makes the limits exact.
"""
from __future__ import annotations

import hashlib
import math

from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import Throttled
from rest_framework.throttling import SimpleRateThrottle

from core.client_address import client_address


class LoginThrottled(Throttled):
    default_detail = _("Demasiados intentos fallidos de inicio de sesión. Espere antes de volver a intentarlo.")

    def __init__(self, wait: float | None):
        # The seconds go in Retry-After and details.retry_after, not in the message.
        super().__init__(wait=None)
        self.wait = None if wait is None else max(1, math.ceil(wait))


class FailedLoginThrottle(SimpleRateThrottle):
    """`allow_request` only looks at the failures in the window; `failure_record` adds one."""

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        self.history = self._recent(self.key)
        return len(self.history) < self.num_requests

    def failure_record(self, request, view) -> None:
        key = self.get_cache_key(request, view)
        if self.rate is None or key is None:
            return
        self.now = self.timer()
        # Not atomic across workers (as DRF's own throttles): concurrent failures may
        # overshoot the limit by the number of requests in flight, never more.
        self.cache.set(key, [self.now, *self._recent(key)], self.duration)

    def _recent(self, key: str) -> list[float]:
        return [moment for moment in self.cache.get(key, []) if moment > self.now - self.duration]


class LoginAddressThrottle(FailedLoginThrottle):
    """Per client address (core.client_address: NUM_PROXIES says which X-Forwarded-For entry, if any), across clinics."""

    scope = "login_ip"

    def get_ident(self, request) -> str | None:
        # Not DRF's: with NUM_PROXIES unset it took the whole X-Forwarded-For, which the client writes.
        return client_address(request)

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginAccountThrottle(FailedLoginThrottle):
    """Per account: the e-mail in this clinic (the same e-mail in another clinic is another account)."""

    scope = "login_account"

    def get_cache_key(self, request, view) -> str | None:
        data = request.data
        email = data.get("email") if hasattr(data, "get") else None
        if not isinstance(email, str) or not email.strip():
            return None
        # Case and spaces do not make another account; hashed, so any input is a valid, short key.
        account = f"{connection.schema_name}:{email.strip().lower()}"
        return self.cache_format % {"scope": self.scope, "ident": hashlib.sha256(account.encode()).hexdigest()}
