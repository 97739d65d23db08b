"""Where patient files and backups live, from the environment (core.storage_settings)."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from core.storage_settings import storages_setting

pytestmark = pytest.mark.no_test_db

LOCAL_MEDIA = "core.media_storage.MediaFileSystemStorage"
SUPABASE = "backups.supabase_storage.SupabaseStorage"
URL, KEY = "https://x.supabase.co", "service-role-key"


def backends(**environment) -> tuple[str, dict, str]:
    options = {"supabase_url": "", "supabase_key": "", "backups_bucket": "backups", "media_bucket": "",
               "backups_root": Path("/var/backups"), **environment}
    storages = storages_setting(**options)
    return storages["default"]["BACKEND"], storages["default"].get("OPTIONS", {}), storages["backups"]["BACKEND"]


@pytest.mark.parametrize(("environment", "media", "media_options", "backups"), [
    # make demo and the tests: both on the local disk
    ({}, LOCAL_MEDIA, {}, "django.core.files.storage.FileSystemStorage"),
    # backups in Supabase, patient files still on the disk (one machine)
    ({"supabase_url": URL, "supabase_key": KEY}, LOCAL_MEDIA, {}, SUPABASE),
    # a deployment on several machines: patient files in a bucket of their own
    ({"supabase_url": URL, "supabase_key": KEY, "media_bucket": "media"}, SUPABASE,
     {"url": URL, "key": KEY, "bucket": "media"}, SUPABASE),
])
def test_patient_files_go_to_their_own_supabase_bucket_only_when_one_is_named(environment, media, media_options, backups):
    assert backends(**environment) == (media, media_options, backups)


@pytest.mark.parametrize("environment", [
    # a bucket without a server: falling back to the disk would lose the files at the next deploy
    {"media_bucket": "media"},
    {"media_bucket": "media", "supabase_url": URL},
    # the backups' own bucket: a patient file's name could reach a dump
    {"media_bucket": "backups", "supabase_url": URL, "supabase_key": KEY},
])
def test_a_media_bucket_that_cannot_work_is_refused_at_start_up(environment):
    with pytest.raises(ImproperlyConfigured):
        backends(**environment)
