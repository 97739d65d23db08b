"""The media files a restore creates and no live row names are deleted, however it ends:
failed in its own process, completed, or killed (a restore into a new clinic) and then reaped.

Committed tests in the test_restore clinic, through restore jobs as the API and
`manage.py restore_backup` run them, so the names are recorded in RestoreFile rows.
"""
from __future__ import annotations

import signal
import uuid

import pytest

from backups.errors import BackupChecksumMismatchError
from backups.files.media import file_object_key
from backups.jobs.enqueue import restore_prepare
from backups.jobs.run import restore_run
from backups.models import RestoreFile, RestoreJob
from backups.jobs.reaper import reap
from backups.services import backup_create
from backups.tests.processes import manage, paused_at
from backups.tests.test_files import CARRIED, CONTEXT, live_files
from backups.tests.test_restore_file_kills import media_snapshot
from clinica.models import Radiografia
from core.models import Tenant
from core.schemas import operation_schemas_left
from core.testing import committed_tables

pytestmark = pytest.mark.committed


def restore_job(backup_id: int) -> RestoreJob:
    return restore_prepare(context=CONTEXT, backup_id=backup_id, confirm="test_restore")


def test_a_restore_that_fails_in_its_process_leaves_no_file_it_created(
    committed_db, settings, backups_dir, media_dir, media_files,
):
    # given a backup of a dozen radiographs, then ten of them deleted (rows, and most files) and one overwritten
    settings.BACKUP_FILE_WORKERS = 4
    radiografias = media_files(count=12, size=64 * 1024)
    backup = backup_create(context=CONTEXT)
    _kept, overwritten, *deleted = radiografias
    for radiografia in deleted[2:]:
        (media_dir / radiografia.archivo.name).unlink()
    for radiografia in deleted:
        radiografia.delete()
    (media_dir / overwritten.archivo.name).write_bytes(b"la radiografia nueva")
    # (two files no row names any more stay: one with its backup-time bytes, one with other bytes;
    # the restore did not create them, so it must never delete them)
    (media_dir / deleted[1].archivo.name).write_bytes(b"otra radiografia")
    # and the content object of a deleted one in the middle damaged, so that other writes come before it
    damaged = backup.files.get(path=deleted[6].archivo.name)
    (backups_dir / file_object_key("test_restore", damaged.sha256)).write_bytes(b"otros bytes" * 1000)
    media_before = media_snapshot(media_dir)
    # when a restore job of the clinic fails on it
    job = restore_job(backup.pk)
    with pytest.raises(BackupChecksumMismatchError):
        restore_run(context=CONTEXT, job_id=job.pk)
    # then the media folder is exactly as before: every file it created (no live row names one) is gone
    assert media_snapshot(media_dir) == media_before
    assert not RestoreFile.objects.filter(job=job).exists()
    assert "test_restore" not in operation_schemas_left()


def test_a_completed_restore_leaves_no_unused_file_and_every_restored_row_its_backup_time_bytes(
    committed_db, backups_dir, media_dir, media_files,
):
    # given a backup, then one radiograph deleted (row and file), one overwritten, one file lost
    deleted, overwritten, lost = media_files(count=3, size=8 * 1024)
    files_at_backup = live_files()
    backup = backup_create(context=CONTEXT)
    (media_dir / deleted.archivo.name).unlink()
    deleted.delete()
    (media_dir / overwritten.archivo.name).write_bytes(b"la radiografia nueva")
    (media_dir / lost.archivo.name).unlink()
    media_before = media_snapshot(media_dir)
    # when the clinic is restored by a job
    job = restore_run(context=CONTEXT, job_id=restore_job(backup.pk).pk)
    assert job.status == RestoreJob.Status.COMPLETED
    # then every file the restored rows name is there with its backup-time bytes (the overwritten one beside it)
    restored = live_files()
    assert sorted(restored.values()) == sorted(files_at_backup.values())
    assert Radiografia.objects.get(pk=overwritten.pk).archivo.name != overwritten.archivo.name
    # and nothing else was created, nothing that was there changed, and no name is left recorded
    media_now = media_snapshot(media_dir)
    assert {path: media_now.get(path) for path in media_before} == media_before
    assert set(media_now) - set(media_before) == set(restored) - set(media_before)
    assert not RestoreFile.objects.filter(job=job).exists()


@pytest.mark.parametrize("kill_at", [
    "restore.files.write@1000",  # in the middle of writing one of the new clinic's files
    "restore.files.done",  # every file written, the clinic not yet registered
])
def test_a_restore_into_a_new_clinic_killed_before_its_registration_leaves_no_file_in_its_folder_after_the_reaper(
    committed_db, backups_dir, media_dir, media_files, tmp_path, kill_at,
):
    # given a backup of a clinic with files
    media_files(count=3, size=4096)
    backup = backup_create(context=CONTEXT)
    media_before = media_snapshot(media_dir)
    new_schema = f"test_restore_kill_{uuid.uuid4().hex[:6]}"
    # when a restore into a new clinic is killed before the clinic is registered
    log = tmp_path / "restore.log"
    ran = manage("restore_backup", "--tenant", "test_restore", "--id", str(backup.pk), "--as-new-tenant", new_schema,
                 backups_dir=backups_dir, kill_at=kill_at, log=log)
    assert ran.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert not Tenant.objects.filter(schema_name=new_schema).exists()
    assert (media_dir / new_schema).exists(), "the kill came before any file was written"
    # then after the reaper no file is left in the new clinic's folder, and the source clinic's are untouched
    report = reap()
    assert not [path for path in (media_dir / new_schema).rglob("*") if path.is_file()]
    assert media_snapshot(media_dir) == media_before
    if kill_at == "restore.files.write@1000":
        # (the file cut short never had its name: only its partial copy was left, removed as a temporary file)
        assert report.media_files == [] and report.temp_files
    else:
        assert len(report.media_files) == 1 and report.media_files[0].startswith("test_restore:")
        assert int(report.media_files[0].split(":")[1]) >= 1  # counted, never named (the report is logged)
    assert not RestoreFile.objects.exists()
    assert "test_restore" not in operation_schemas_left()


def test_a_name_a_user_takes_between_the_check_and_the_write_is_never_deleted(
    committed_db, backups_dir, media_dir, media_files, tmp_path,
):
    # given a backup, then one radiograph's file lost (its row still names the path)
    lost, *_others = media_files(count=3, size=4096)
    backup = backup_create(context=CONTEXT)
    (media_dir / lost.archivo.name).unlink()
    rows_before = committed_tables("test_restore", exclude=CARRIED)
    # when a restore has recorded that free name, and then a user uploads a new file there
    # (as a re-upload of the lost radiograph would) before the restore writes it
    log = tmp_path / "restore.log"
    with paused_at("restore.files.recorded", "restore_backup", "--tenant", "test_restore", "--id", str(backup.pk), "--yes",
                   backups_dir=backups_dir, log=log) as child:
        assert RestoreFile.objects.filter(path=lost.archivo.name).exists()
        (media_dir / lost.archivo.name).write_bytes(b"la radiografia que subio el usuario")
    child.wait(timeout=60)
    # then the restore refuses to write beside it and fails, leaving the clinic as it was,
    # and neither its own clean-up nor the reaper deletes the user's file, which a live row names
    assert child.returncode != 0, log.read_text()[-3000:]
    reap()
    assert (media_dir / lost.archivo.name).read_bytes() == b"la radiografia que subio el usuario"
    assert committed_tables("test_restore", exclude=CARRIED) == rows_before
    assert not RestoreFile.objects.exists()
    user_file = media_dir / lost.archivo.name
    # (and the copy the storage saved under another name when the restore found it taken is gone)
    assert [path.name for path in user_file.parent.iterdir() if path.name.startswith(user_file.stem)] == [user_file.name]
