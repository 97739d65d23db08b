from __future__ import annotations

from datetime import date

from django.db.models import QuerySet

from bitacora.models import Bitacora


def bitacora_list(*, action: str | None = None, desde: date | None = None, hasta: date | None = None) -> QuerySet[Bitacora]:
    """The current clinic's entries, newest first, optionally filtered."""
    entries = Bitacora.objects.all().order_by("-created_at", "-id")
    if action:
        entries = entries.filter(action=action)
    if desde:
        entries = entries.filter(created_at__date__gte=desde)
    if hasta:
        entries = entries.filter(created_at__date__lte=hasta)
    return entries
