"""Backups and restores as jobs: reserve a record, hand it to a worker, let the caller wait a little.

1. `*_enqueue` checks what can be checked at once (the clinic is free, the backup
   exists and is completed, the confirmation matches) and writes the job's record as
   `pending`: a bad request is still a 4xx, and a busy clinic still a 409.
2. The Celery task (backups.tasks) runs `*_run` in the clinic's schema: under the
   clinic's lock it claims the record (`pending` → `running`, once: a message
   delivered twice runs once), does the work, and leaves the record `completed` or
   `failed` with its reason. Whatever it ends with is in the audit log.
3. `job_wait` lets an API call wait up to JOB_WAIT_SECONDS for the record to settle:
   the seed's answer if it did, 202 with the record to poll if not.
With no broker configured the job runs inline inside step 1's caller.
A process that dies mid-job leaves the record `running` with nobody holding the
clinic's lock; the reaper (backups.jobs.reaper) finds it and reports it failed.

Modules:
- enqueue.py: step 1 (`backup_enqueue`, `restore_enqueue`, `restore_prepare`) and step 3
  (`job_wait`). It hands the job to the Celery tasks of backups.tasks.
- run.py: step 2 of a restore (`restore_run`); a backup's is backups.services.backup_run.
  The tasks call these, and nothing here calls back into the tasks.
- reaper.py: what a killed job left behind, found and put right.
"""
