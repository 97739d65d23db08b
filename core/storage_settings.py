"""STORAGES from the environment: where patient files and backups live.

- "default", the patient files (every FileField: clinica.Radiografia.archivo): a private
  Supabase Storage bucket when SUPABASE_MEDIA_BUCKET is set, else the local disk
  (MEDIA_ROOT, core.media_storage: `make demo` and the tests). On Render the web service,
  the worker and the cron job are separate machines with disks of their own, new at every
  deploy: files on one's disk are invisible to the others and lost at the next deploy, so
  a deployment sets the bucket for all three.
- "backups": Supabase Storage (SUPABASE_BUCKET) when SUPABASE_URL and SUPABASE_KEY are
  set, else the local disk (BACKUPS_LOCAL_ROOT).
Any django-storages backend fits either alias by editing STORAGES in core.settings; for
patient files it must never overwrite on save (S3: AWS_S3_FILE_OVERWRITE = False).
"""
from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

SUPABASE_BACKEND = "backups.supabase_storage.SupabaseStorage"


def storages_setting(*, supabase_url: str, supabase_key: str, backups_bucket: str, media_bucket: str,
                     backups_root: Path) -> dict:
    """STORAGES for these settings; a media bucket that cannot work is refused at start-up."""
    supabase = bool(supabase_url and supabase_key)
    if media_bucket and not supabase:
        # Falling back to the local disk here would be the silent loss this setting exists to prevent.
        raise ImproperlyConfigured("SUPABASE_MEDIA_BUCKET necesita SUPABASE_URL y SUPABASE_KEY.")
    if media_bucket and media_bucket == backups_bucket:
        # Both keep objects under `<clinic>/`: a patient file's name could then reach a dump.
        raise ImproperlyConfigured("SUPABASE_MEDIA_BUCKET debe ser un bucket distinto de SUPABASE_BUCKET.")
    options = {"url": supabase_url, "key": supabase_key}
    return {
        "default": (
            {"BACKEND": SUPABASE_BACKEND, "OPTIONS": {**options, "bucket": media_bucket}}
            if media_bucket
            else {"BACKEND": "core.media_storage.MediaFileSystemStorage"}
        ),
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
        "backups": (
            {"BACKEND": SUPABASE_BACKEND, "OPTIONS": {**options, "bucket": backups_bucket}}
            if supabase
            else {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": backups_root}}
        ),
    }
