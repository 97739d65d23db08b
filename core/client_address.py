"""The one rule for who sent a request: its client's IP address.

REMOTE_ADDR is the peer that opened the connection: the client itself, or the nearest
proxy. Each proxy appends the address it saw to X-Forwarded-For, after whatever the
client wrote there itself, so only the last NUM_PROXIES entries (REST_FRAMEWORK
["NUM_PROXIES"]: the proxies the deployment puts in front; Render has 1) are the
proxies' word, and the first of those is the client:

1. NUM_PROXIES unset or 0: no proxy is trusted and the header is ignored entirely; the
   client is the peer. (DRF's get_ident took the whole header then: a client chose its
   own address, a new one per request escaped the login limits, and writing a victim's
   address locked the victim out.)
2. NUM_PROXIES=N: the Nth entry from the right.
3. A header with fewer than N entries did not come through every proxy, and an entry
   that is no IP address was not written by one: neither is anyone's word but the
   client's, so the client is the peer, an address nobody writes.

Every place that takes a client's address takes it here: the login limits of the API
and of the admin's form (usuarios.throttling) and the audit log (bitacora).
"""
from __future__ import annotations

import ipaddress

from rest_framework.settings import api_settings


def _ip(text: str) -> str | None:
    """`text` as an IP address in its one spelling (IPv4-mapped IPv6 as IPv4, no zone), else None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.scope_id is not None:  # `fe80::1%eth0`: no PostgreSQL inet holds the zone
            return str(ipaddress.IPv6Address(int(address)))
    return str(address)


def client_address(request) -> str | None:
    """The client's IP address by the rule above; None when even the peer has none (a Unix socket).

    `request` is anything with Django's META: an HttpRequest, DRF's Request, the admin's login form.
    """
    peer = _ip(request.META.get("REMOTE_ADDR") or "")
    proxies = api_settings.NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return peer
    entries = forwarded.split(",")
    if len(entries) < proxies:
        return peer
    return _ip(entries[-proxies]) or peer
