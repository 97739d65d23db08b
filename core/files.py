"""Files the project writes: how their names carry the time."""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone

from django.utils import timezone

FILE_NAME_TIMESTAMP = "%Y-%m-%d_%H-%M-%S"


def file_name_timestamp(moment: datetime | None = None) -> str:
    """The moment in UTC, for file names: the same instant gets the same name whatever
    the server's or the clinic's time zone, and names sort in time order."""
    return (moment or timezone.now()).astimezone(dt_timezone.utc).strftime(FILE_NAME_TIMESTAMP)
