"""Patient files (every FileField of the tenant apps) inside a clinic's SQL backups.

Backup, after the dump (backups.services.backup_run):
1. The file list is read in the dump's own snapshot: one REPEATABLE READ session
   exports its snapshot, lists every path the clinic's rows name, and pg_dump runs
   with `--snapshot` while that session stays open. A file added or deleted during
   the backup is in both the dump and the list, or in neither.
2. Each file is read once from the media storage (STORAGES["default"]) into a
   bounded spool while hashed, on one of BACKUP_FILE_WORKERS threads
   (backups.files.store). Its entry (path, sha256, size, modification time) is
   written, on the thread that holds the database session, before its upload is
   started: a backup killed mid-way still names every object it may have stored,
   and retention can remove them with its record.
3. The content goes to the backups storage once per clinic, named by its sha256
   (`<clinic>/files/<ab>/<sha256>`; sealed, the storage keeps it under a keyed hash of
   that name, backups.storage.sealed): an object a completed backup names is there;
   any other one is checked by size (a killed upload may have left part of one) and
   uploaded when absent. A file whose size and modification time match its entry in
   an earlier completed backup is not read again: a nightly backup reads and uploads
   only new files.
4. A file the rows name but the media storage lacks is recorded as missing (a blank
   sha256) and audited; the backup still completes, since its SQL is still good.

Restore, before the schema swap (backups.files.restore; the write order is in backups.restore's map):
every path the staging rows name gets a media file with its backup-time content, by
creating files only, never by overwriting or deleting one. A path that holds the
same bytes is left as it is; a free path is written; a path holding other bytes is
left alone and the content goes to a new name that the staging rows are rewritten
to. Each path's check and write runs on one of the BACKUP_FILE_WORKERS threads
(backups.files.threads, shared with the backup); the database stays on the calling
thread, which rewrites a batch's rows only once every file of the batch is written.
Each name about to be created is recorded first (RestoreFile rows of the job); whoever sees the
restore end (itself, or the reaper) deletes those that no live row names (backups.files.cleanup).
The media storage must not overwrite on save, and must show a file whole or not at all: the local
disk's (core.media_storage) publishes each file with a hard link once every byte is written;
Supabase Storage (SUPABASE_MEDIA_BUCKET, core.storage_settings) uploads each object in one request
without upsert, so a taken name is refused; django-storages' S3 needs AWS_S3_FILE_OVERWRITE = False.
A missing file is FileNotFoundError on every backend, as Django's Storage API has it.
The archive of a backup's files is backups.files.archive; the list of them stored beside the
dump, readable without the database, is backups.files.list.

Modules, in the order a backup's files flow through them:
- media.py: what the phases share (file fields, the media storage, object keys, the
  snapshot's path list, the spool).
- store.py: a backup's file phase (steps 2 to 4), on the threads of threads.py.
- list.py: the file list stored beside the dump, and the check of it that verify runs.
- archive.py: a backup's files as one tar, streamed (the `…/files/` download).
- restore.py: a restore's file phase, on the same threads.
- cleanup.py: the names a restore created, recorded before and deleted after if unused.
- recover.py: files back from a file list alone (`manage.py restore_backup_files`).
- threads.py: the worker threads shared by store, restore and recover.
"""
