"""Reading alerts: what the platform page shows."""
from __future__ import annotations

from collections import defaultdict

from alertas.models import Alert


def alerts_open_by_clinic() -> dict[str, list[Alert]]:
    """Every clinic's open alerts (not resolved), newest first, by schema: one query whatever the clinics."""
    found: dict[str, list[Alert]] = defaultdict(list)
    for alert in Alert.objects.filter(resolved_at=None).order_by("-created_at", "-id"):
        found[alert.schema].append(alert)
    return dict(found)
