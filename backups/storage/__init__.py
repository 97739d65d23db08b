"""Where a backup's objects live: Django's Storage API under STORAGES["backups"].

- objects.py: the one way the rest of the app reads and writes that storage: open,
  save under an exact name, copy while hashing, and the kill points of the crash tests.
- sealed.py: the layer objects.py reads and writes through: every object age-encrypted
  to its clinic's key on the way in, decrypted and authenticated on the way out, file
  contents named by a keyed hash; plain objects written before it stay readable.
- keys.py: the clinic keys (one age identity per clinic, stored beside its backups,
  wrapped to the platform's recipients): made, read, rotated, rewrapped, destroyed.
- age_format.py: the age format through pyrage: streams, failures told apart, sizes.
- supabase.py: the Supabase Storage backend (storage3 over httpx; uploads stream from
  disk, downloads stream through short-lived signed URLs, a save never replaces an
  object). Settings name it by seed 000's path, backups.supabase_storage.SupabaseStorage,
  which re-exports it; it also holds the patient files (STORAGES["default"]) in a bucket
  of their own when SUPABASE_MEDIA_BUCKET is set (core.storage_settings).
- supabase_errors.py: what the Supabase server's answers mean, as backups.errors.
The local file system (FileSystemStorage) is the default when SUPABASE_URL is unset;
any django-storages backend works by configuration alone.
"""
