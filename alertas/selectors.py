"""Reading alerts: what the platform page shows, and which clinics it shows first."""
from __future__ import annotations

from collections import defaultdict

from django.db.models import Exists, OuterRef, QuerySet

from alertas.models import Alert


def alerts_open_by_clinic(*, schemas: list[str] | None = None) -> dict[str, list[Alert]]:
    """Open alerts (not resolved) of every clinic, or of these, newest first, by schema: one query."""
    found: dict[str, list[Alert]] = defaultdict(list)
    alerts = Alert.objects.filter(resolved_at=None).order_by("-created_at", "-id")
    if schemas is not None:
        alerts = alerts.filter(schema__in=schemas)
    for alert in alerts:
        found[alert.schema].append(alert)
    return dict(found)


def clinics_with_open_alerts_first(clinics: QuerySet) -> QuerySet:
    """These clinics (core.Tenant), those with an open alert first, each group in the queryset's order.

    The open alerts are the index of what needs a person across all clinics, kept as things happen
    (a failure, the hourly overdue check, a failed drill): ordering 10,000 clinics by them is one
    query, where reading every clinic's own backups is hundreds.
    """
    open_alerts = Alert.objects.filter(schema=OuterRef("schema_name"), resolved_at=None)
    ordering = clinics.query.order_by or ("nombre", "schema_name")
    return clinics.annotate(has_open_alerts=Exists(open_alerts)).order_by("-has_open_alerts", *ordering)
