"""A restore SIGKILLed at each step of its file phase loses no live file and changes no row, and after
the reaper leaves no file it created that no live row names; a file whose writing is killed
(a restore's, or restore_backup_files') is never at its name in part;
a backup SIGKILLed in its file phase leaves no object its record does not name.

A real `manage.py restore_backup` child, killed by core.faults (CLINICA_KILL_AT) at
each point restore_files marks, with the clinic set up so that the phase does every
kind of write: a file lost since the backup (written back at its path) and a file
overwritten since (its backup-time bytes go beside it, the staging rows rewritten).
"""
from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import pytest

from backups.files.list import file_list_key
from backups.files.media import file_object_key
from backups.models import BackupFile, BackupRecord, RestoreFile
from backups.jobs.reaper import reap
from backups.restore import backup_restore_in_place
from backups.services import backup_create, backup_verify
from backups.tests.processes import manage
from backups.tests.test_files import CONTEXT, clinic_rows, live_files
from clinica.models import Radiografia
from core.media_storage import PARTIAL_FOLDER
from core.schemas import operation_schemas_left

pytestmark = pytest.mark.committed

FILE_PHASE_STEPS = [
    "restore.files.before_write",  # staging replayed, nothing written yet
    "restore.files.recorded",  # the names to create recorded, none written
    "restore.files.write@1000",  # in the middle of writing a file's bytes
    "restore.files.before_rewrite",  # files written, staging rows not yet rewritten
    "restore.files.done",  # staging rows rewritten, the swap not begun
    "restore.swap_before_commit",  # inside the swap's transaction, before its commit
]


def media_snapshot(media_dir: Path) -> dict[str, str]:
    """Every file in the media folder, by its name in the storage, and the sha256 of its bytes."""
    return {path.relative_to(media_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in media_dir.rglob("*") if path.is_file()}


@pytest.mark.parametrize("kill_at", FILE_PHASE_STEPS)
def test_a_restore_killed_in_its_file_phase_loses_no_live_file_and_changes_no_row(
    committed_db, backups_dir, media_dir, media_files, tmp_path, kill_at,
):
    # given a backup, then one radiograph's file lost, another's overwritten, and rows changed
    lost, overwritten = media_files(count=2, size=4096)
    backup = backup_create(context=CONTEXT)
    lost_bytes = (media_dir / lost.archivo.name).read_bytes()
    (media_dir / lost.archivo.name).unlink()
    (media_dir / overwritten.archivo.name).write_bytes(b"la radiografia nueva")
    Radiografia.objects.filter(pk=lost.pk).update(descripcion="Cambiada")
    rows_before, files_before, media_before = clinic_rows(), live_files(), media_snapshot(media_dir)
    # when a restore is killed at that step
    log = tmp_path / "restore.log"
    ran = manage("restore_backup", "--tenant", "test_restore", "--id", str(backup.pk), "--yes",
                 backups_dir=backups_dir, kill_at=kill_at, log=log)
    # then it died there, and the live clinic is exactly as before: rows, and every file its rows name
    assert ran.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert clinic_rows() == rows_before
    files_now = live_files()
    assert {path: files_now[path] for path, sha256 in files_before.items() if sha256} == {
        path: sha256 for path, sha256 in files_before.items() if sha256
    }
    # (the lost file's name held nothing: the restore may have written there, never anywhere a file was)
    assert (media_dir / overwritten.archivo.name).read_bytes() == b"la radiografia nueva"
    # and the reaper drops what it left
    reap()
    assert "test_restore" not in operation_schemas_left()
    # and every file the restore created is gone (the overwritten one's copy beside it included, and any
    # partial copy of a write the kill cut), every file that was there untouched; only the lost file's name,
    # which a live row names, may hold the bytes written there, all of them (a file appears whole or not at all)
    media_now = media_snapshot(media_dir)
    assert {path: media_now.get(path) for path in media_before} == media_before
    created = set(media_now) - set(media_before)
    assert created <= {lost.archivo.name}
    if created:
        assert (media_dir / lost.archivo.name).read_bytes() == lost_bytes
    assert not RestoreFile.objects.exists()
    if kill_at == "restore.files.write@1000":
        # then a new restore never trusts the half-written file: every file is whole afterwards
        backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
        assert set(live_files().values()) >= set(backup.files.values_list("sha256", flat=True)) and all(live_files().values())


WRITERS = {
    "restore_backup": lambda backup: ("restore_backup", "--tenant", "test_restore", "--id", str(backup.pk), "--yes"),
    "restore_backup_files": lambda backup: ("restore_backup_files", "--list", file_list_key(backup.file_path)),
}


@pytest.mark.parametrize("command", WRITERS)
def test_a_lost_file_whose_writing_is_killed_is_not_at_its_name_and_the_next_run_writes_it_whole(
    committed_db, backups_dir, media_dir, media_files, tmp_path, command,
):
    # given a backup, then one radiograph's file lost (its row still names it): the only file to write
    lost, = media_files(count=1, size=64 * 1024)
    backup = backup_create(context=CONTEXT)
    lost_path = media_dir / lost.archivo.name
    lost_bytes = lost_path.read_bytes()
    lost_path.unlink()
    # when the restore (or the recovery from the file list) is killed 1,000 bytes into writing it
    log = tmp_path / "write.log"
    ran = manage(*WRITERS[command](backup), backups_dir=backups_dir, kill_at="restore.files.write@1000", log=log)
    assert ran.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    # then nothing is at the name the live row holds: a backup now would find it missing, not store part of it
    assert not lost_path.exists()
    assert list((media_dir / PARTIAL_FOLDER).iterdir()), "the kill came before the write began"
    # and the reaper leaves nothing of the cut write
    report = reap()
    assert report.temp_files and not list((media_dir / PARTIAL_FOLDER).iterdir())
    # and the next run writes the file whole at its name
    rerun = manage(*WRITERS[command](backup), backups_dir=backups_dir, log=log)
    assert rerun.returncode == 0, log.read_text()[-3000:]
    assert lost_path.read_bytes() == lost_bytes


@pytest.mark.parametrize("kill_at", [
    "backup.files.entries_written",  # the first files' entries committed, their uploads not started
    "backup.files.upload@100000",  # one of the concurrent uploads 100,000 bytes in
])
def test_a_backup_killed_while_its_threads_upload_files_leaves_only_objects_its_record_names(
    committed_db, backups_dir, media_files, tmp_path, kill_at,
):
    # given a clinic with a dozen radiographs of 256 KiB, more than the file phase's threads at once
    media_files(count=12, size=256 * 1024)
    # when a backup is killed in its file phase
    log = tmp_path / "backup.log"
    ran = manage("create_backup", "--tenant", "test_restore", backups_dir=backups_dir, kill_at=kill_at, log=log)
    assert ran.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    killed = BackupRecord.objects.order_by("-id").first()
    assert killed.status == BackupRecord.Status.RUNNING
    # then every object it left (whole or cut short) is named by its record's entries: retention can find it
    stored = {path.name for path in (backups_dir / "test_restore" / "files").rglob("*") if path.is_file()}
    if "upload" in kill_at:
        assert stored, "the kill came before any upload began"
    assert stored <= set(BackupFile.objects.filter(backup=killed).values_list("sha256", flat=True))
    # and after the reaper, the next backup stores every file whole, none trusted from the cut upload
    reap()
    killed.refresh_from_db()
    assert killed.status == BackupRecord.Status.FAILED
    backup = backup_create(context=CONTEXT)
    assert backup.files_count >= 12
    assert backup_verify(context=CONTEXT, backup=backup) == BackupRecord.Integrity.OK
    for sha256 in backup.files.values_list("sha256", flat=True):
        assert (backups_dir / file_object_key("test_restore", sha256)).stat().st_size == BackupFile.objects.filter(
            sha256=sha256).values_list("size", flat=True).first()
