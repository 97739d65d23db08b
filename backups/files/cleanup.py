"""The media files a restore created and nobody uses: recorded before they are written, deleted afterwards.

1. Record (backups.files.restore): a worker first checks each path; the names found
   free, which the phase is about to create, are recorded by the calling thread in one
   INSERT per batch (RestoreFile rows of the job, committed) before any of them is
   written. A name that already held a file (the right bytes or other ones) is never
   recorded, so nothing here can delete a file that existed before the restore.
2. Clean up, whenever the restore ends (failed, or after its swap or registration
   committed) and in the reaper for a job whose process died: a recorded name is
   deleted only if it exists and no row of a live clinic names it (every FileField,
   backups.files.media.file_fields); then the job's rows go. The live clinic of an in-place
   restore is the clinic itself (the old rows or the restored ones, whichever the
   swap left); a restore into a new clinic also counts the new one once it exists.
   Without a job (a direct service call) the names are kept in memory only: a
   process that dies then leaves its files to nobody.
The one name not predictable, a free name taken by someone else between the check
and the write (the storage then picks another), is refused (files_restore._write): it
deletes what it wrote and fails, so the restore never creates an unrecorded name. Left
open: a user's upload taking a recorded name before the restore wrote it, seen by a
clean-up between that file's save and its row's commit (milliseconds), would be deleted.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from typing import Iterable, Iterator

from django.db import connection
from django_tenants.utils import schema_exists

from backups.files.media import batched, file_fields, media_storage
from backups.models import RestoreFile, RestoreJob
from core.errors import OperationInProgressError
from core.locks import tenant_operation_lock

logger = logging.getLogger(__name__)


class CreatedNames:
    """The names a restore's file phase is about to create: its job's RestoreFile rows, or memory without a job."""

    def __init__(self, job: RestoreJob | None):
        self.job = job
        self.in_memory: list[str] = []

    def record(self, names: list[str]) -> None:
        """Before any of them is written: one INSERT, committed (the caller holds no transaction)."""
        if self.job is not None:
            RestoreFile.objects.bulk_create([RestoreFile(job_id=self.job.pk, path=name) for name in names])
        else:
            self.in_memory.extend(names)

    def names(self) -> Iterator[str]:
        if self.job is None:
            return iter(list(self.in_memory))
        return RestoreFile.objects.filter(job_id=self.job.pk).values_list("path", flat=True).iterator()

    def forget(self) -> None:
        if self.job is not None:
            RestoreFile.objects.filter(job_id=self.job.pk).delete()
        self.in_memory.clear()


def named_paths(schema: str, names: list[str]) -> set[str]:
    """Which of names a row of the schema names, in any file field."""
    selects = [
        f'SELECT "{model_field.column}" FROM "{schema}"."{model._meta.db_table}" WHERE "{model_field.column}" = ANY(%s)'
        for model, model_field in file_fields()
    ]
    if not selects or not names:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(" UNION ".join(selects), [names] * len(selects))
        return {path for (path,) in cursor.fetchall()}


def unused_delete(*, names: Iterable[str], live_schemas: list[str]) -> list[str]:
    """Delete each name that exists and no row of the live schemas names; the names deleted."""
    media = media_storage()
    deleted = []
    for batch in batched(names):
        named = set().union(*(named_paths(schema, batch) for schema in live_schemas))
        for name in batch:
            if name not in named and media.exists(name):
                media.delete(name)
                deleted.append(name)
    return deleted


def created_files_cleanup(created: CreatedNames, live_schemas: list[str]) -> list[str]:
    """Delete what the restore created and no live row names, then forget the names; the names deleted."""
    # A schema that does not exist (a new clinic never registered) has no live rows.
    deleted = unused_delete(names=created.names(), live_schemas=[name for name in live_schemas if schema_exists(name)])
    created.forget()
    return deleted


@contextmanager
def created_files(job: RestoreJob | None, live_schemas: list[str]) -> Iterator[CreatedNames]:
    """The names a restore's file phase records, cleaned up however the block ends.

    A clean-up that fails is logged, not raised: it must not hide the restore's own
    error or fail a restore that committed; the rows stay for the reaper.
    """
    created = CreatedNames(job)
    try:
        yield created
    finally:
        try:
            created_files_cleanup(created, live_schemas)
        except Exception:
            logger.exception("restore: could not remove the files job %s created", job.pk if job else None)


def restore_job_live_schemas(schema: str, job: RestoreJob) -> list[str]:
    """The clinics whose rows may name a job's files: its own, and the new one a restore into it registered."""
    return [schema, job.new_schema] if job.kind == RestoreJob.Kind.NEW_TENANT and job.new_schema else [schema]


def restore_files_reap(schema: str) -> list[str]:
    """Under the clinic's lock (so every restore of it is dead): clean up every job's recorded names."""
    deleted: list[str] = []
    for job in RestoreJob.objects.filter(pk__in=RestoreFile.objects.values("job_id")):
        new_clinic = job.kind == RestoreJob.Kind.NEW_TENANT and job.new_schema
        try:
            # A restore into the same new name from another clinic may be writing these very names now.
            with tenant_operation_lock(job.new_schema) if new_clinic else nullcontext():
                deleted += created_files_cleanup(CreatedNames(job), restore_job_live_schemas(schema, job))
        except OperationInProgressError:
            continue  # left for a later run
        except Exception:
            # The media storage down must not stop the reaper's other work: the rows stay for a later run.
            logger.exception("reaper: could not remove the files restore job %s created", job.pk)
    return deleted
