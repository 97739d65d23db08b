from datetime import datetime, timezone as dt_timezone
from zoneinfo import ZoneInfo

from django.utils import timezone

from core.files import file_name_timestamp


def test_file_names_carry_utc_whatever_the_active_time_zone(settings):
    # given a server and a request in La Paz (UTC-4), at 22:30 local time on 14 June
    settings.TIME_ZONE = "America/La_Paz"
    moment = datetime(2025, 6, 14, 22, 30, tzinfo=ZoneInfo("America/La_Paz"))
    with timezone.override("America/La_Paz"):
        # when a file name is stamped, then it is the UTC moment: 02:30 on the 15th
        assert file_name_timestamp(moment) == "2025-06-15_02-30-00"
    assert file_name_timestamp(moment.astimezone(dt_timezone.utc)) == "2025-06-15_02-30-00"
