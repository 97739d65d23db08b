"""Settings of bench_media's children: patient files in the local Supabase Storage server (the
environment's SUPABASE_URL, SUPABASE_KEY and SUPABASE_MEDIA_BUCKET), backups on the local disk,
so that the backup is measured reading object storage against a bare read of the same objects
(with backups in Supabase too, every byte would also cross the same server a second time).

The Supabase client (storage3, ~0.5 s to import) is imported here, as a deployed worker has it
from its first job (or from the backups storage, when that is Supabase too): otherwise this
one-time cost of a fresh process would land in the file phase measured."""
import storage3  # noqa: F401  (see above)

from core.settings import *  # noqa: F403,E402

STORAGES = {**STORAGES, "backups": {  # noqa: F405
    "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": BACKUPS_LOCAL_ROOT}}}  # noqa: F405
