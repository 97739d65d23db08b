"""The Supabase Storage backend under the name seed 000 gives it, so that
`STORAGES[...]["BACKEND"] = "backups.supabase_storage.SupabaseStorage"` keeps working;
the backend itself lives with the rest of the storage code (backups.storage)."""
from backups.storage.supabase import SupabaseStorage

__all__ = ["SupabaseStorage"]
