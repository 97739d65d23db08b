"""Restore drills: a clinic's latest backup restored into a scratch schema and checked, the
live clinic never touched, so that a backup nobody could restore is found before it is needed.

0. Scheduled (plan.py): every clinic at least every BACKUP_DRILL_EVERY_DAYS, about 1/N of
   them a night (Celery beat runs backups.tasks.drill_night_task); or one clinic now
   (`manage.py drill_backup`, the platform page's button; schedule.py).
1. The backup: the clinic's latest completed one, unless one is named. Under the clinic's
   drill lock (a second drill of it is a 409), never its operation lock: the clinic's own
   backups and restores go on. The record's drill is `running` from here on.
2. The stored dump copied and checked as a restore checks it: its sha256, and migrations not
   newer than the code (backups.restore.replay_checks).
3. Replayed on the restore's own path (backups.restore.replay_into_staging) into a scratch
   schema, `<clinic>__drill_<hex>`. The live schema is renamed aside only inside the
   replay's transaction; a restore of the clinic meanwhile terminates that replay rather
   than wait for it (core.locks), and the drill ends `interrupted`, not failed.
4. Before any migration can rewrite them, every table of the scratch schema read back and
   compared with the row count and checksum the backup recorded while it wrote that
   table's rows (backups.dump.tables): a table missing, rows more or fewer, a value changed
   after the backup was made all fail the drill, naming the tables (checks.py).
5. Migrated forward when the backup is older than the code, as a restore does: a migration
   that cannot apply to an old backup fails the drill (its name in the reason), before any
   clinic needs that backup.
6. The scratch schema dropped, whatever happened; then the backup's file list and every file
   object it names re-read against their sha256 (checks.py).
7. The outcome (`passed`, `failed`, `interrupted`), the restore time (steps 2, 3 and 5: what a
   restore of the database takes) and the reason on the backup's record, and one entry in
   the clinic's audit log.
A process killed at any step leaves at most the scratch schema and a `running` drill: once
the drill lock is free (it dies with the process), the reaper drops the one and marks the
other `interrupted` (backups.jobs.reaper, step 5).

Modules:
- run.py: steps 1 to 7 (`drill_run`).
- checks.py: steps 4 and 6.
- plan.py: step 0's plan, pure, and the clinics it picks tonight (`drills_due`).
- schedule.py: a drill as a job (`drill_enqueue`), inline without a broker.
- errors.py: why a drill failed, as domain errors.
"""
