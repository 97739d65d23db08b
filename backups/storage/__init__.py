"""Where a backup's objects live: Django's Storage API under STORAGES["backups"].

- objects.py: the one way the rest of the app reads and writes that storage: open,
  save under an exact name, copy while hashing, and the kill points of the crash tests.
- supabase.py: the Supabase Storage backend (storage3 over httpx; uploads stream from
  disk, downloads stream through short-lived signed URLs, a save never replaces an
  object). Settings name it by seed 000's path, backups.supabase_storage.SupabaseStorage,
  which re-exports it; it also holds the patient files (STORAGES["default"]) in a bucket
  of their own when SUPABASE_MEDIA_BUCKET is set (core.storage_settings).
- supabase_errors.py: what the Supabase server's answers mean, as backups.errors.
The local file system (FileSystemStorage) is the default when SUPABASE_URL is unset;
any django-storages backend works by configuration alone.
"""
