"""The JSON export and import of one clinic's data (seed 004's `utils.py`).

Seed 004 names this module as the home of the export and import functions; they
live beside it, one module per job, and are imported from here:

- plan.py: which models a backup holds, their fields, in foreign-key order.
- export.py: the streamed export from one snapshot (tenant_data_export_chunks, gzip_chunks).
- reader/: reading an uploaded file as a stream (open_backup_stream, BackupReader, its map in __init__).
- importer.py: the restore in one transaction (tenant_data_import); its docstring maps the steps.
- row_checks.py: what each row passes before either write path (its length, key, files, JSON fields).
- constraints.py: foreign keys and indexes dropped for the load, then rebuilt, as psql does.
- diagnosis.py: naming the row PostgreSQL refused, and why.
"""
from backup_restore.export import gzip_chunks, tenant_data_export_chunks
from backup_restore.importer import ModelSummary, RestoreResult, tenant_data_import
from backup_restore.plan import FORMAT_NAME, FORMAT_VERSION, ModelPlan, ProgressCallback, models_plan
from backup_restore.reader import BackupReader, open_backup_stream

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BackupReader",
    "ModelPlan",
    "ModelSummary",
    "ProgressCallback",
    "RestoreResult",
    "gzip_chunks",
    "models_plan",
    "open_backup_stream",
    "tenant_data_export_chunks",
    "tenant_data_import",
]
