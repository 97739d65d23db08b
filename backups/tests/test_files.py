"""Patient files inside SQL backups: round trips, dedup, the snapshot, retention, verify.

These commit for real (marker `committed`): pg_dump reads in its own snapshot and sees
only committed rows, and restores swap schemas. They work in the test_restore clinic,
with its media and backups folders their own (media_dir, backups_dir).
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import threading
import uuid
from datetime import timedelta

import pytest
from django.core.files.storage import FileSystemStorage, storages
from django.db import connection

from backups.files.media import file_object_key
from backups.files.restore import new_clinic_rename
from backups.errors import BackupFailedError
from backups.models import BackupRecord
from backups.restore import CARRIED_MODELS, backup_restore_as_new_tenant
from backups.retention import RetentionPolicy, backup_prune
from backups.services import backup_create, backup_verify
from backups.tests.processes import paused_at
from bitacora.models import Bitacora
from bitacora.services import AuditContext
from clinica.models import Radiografia
from core.models import Tenant
from core.schemas import schema_drop
from core.testing import committed_tables

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-archivos")
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)


def live_files(schema: str = "test_restore") -> dict[str, str]:
    """sha256 of every file the clinic's committed radiographs name ("" when the media storage lacks it)."""
    media = storages["default"]
    paths = {path for table in [committed_tables(schema)["clinica_radiografia"]] for row in table for path in row if
             isinstance(path, str) and "/radiografias/" in path}
    return {path: (hashlib.sha256(media.open(path).read()).hexdigest() if media.exists(path) else "") for path in paths}


def clinic_rows() -> dict:
    return committed_tables("test_restore", exclude=CARRIED)


def dump_paths(backup: BackupRecord, backups_dir) -> set[str]:
    """The paths the dump's clinica_radiografia rows name, read from its COPY block."""
    sql = gzip.decompress((backups_dir / backup.file_path).read_bytes()).decode()
    lines = iter(sql.splitlines())
    for line in lines:
        if line.startswith("COPY test_restore.clinica_radiografia ("):
            columns = [name.strip() for name in line[line.index("(") + 1:line.index(")")].split(",")]
            index = columns.index("archivo")
            paths = set()
            for row in lines:
                if row == "\\.":
                    return paths
                paths.add(row.split("\t")[index])
    raise AssertionError("no COPY block for clinica_radiografia")


def test_round_trip_with_files_through_the_api(committed_db, backups_dir, media_dir, media_files, client_for):
    # given a clinic whose radiographs all have their files
    media_files(count=3)
    rows_at_backup, files_at_backup = clinic_rows(), live_files()
    client = client_for("test_restore", "admin")
    backup = client.post("/api/backups/create/", {}, content_type="application/json").json()["backup"]
    assert backup["files_count"] == len(files_at_backup) >= 3
    assert backup["files_size"] == sum(os.path.getsize(media_dir / path) for path in files_at_backup)
    # and then the media storage is lost and rows change
    shutil.rmtree(media_dir)
    Radiografia.objects.filter(pk=Radiografia.objects.order_by("pk").first().pk).update(descripcion="Cambiada")
    Radiografia.objects.filter(pk=Radiografia.objects.order_by("-pk").first().pk).delete()
    # when the admin restores the backup through the API
    response = client.post(f"/api/backups/history/{backup['id']}/restore/", {"confirm": "test_restore"},
                           content_type="application/json")
    # then every row is as it was, and every restored row's file is back with its bytes
    assert response.status_code == 200, response.content
    assert clinic_rows() == rows_at_backup
    assert live_files() == files_at_backup
    entry = Bitacora.objects.filter(action="backup.restore", target_id=str(backup["id"]), outcome="ok").latest("id")
    assert entry.details["files_written"] == len(files_at_backup) and entry.details["files_missing"] == 0


def test_a_file_changed_since_the_backup_is_restored_beside_it_never_over_it(committed_db, backups_dir, media_dir, media_files):
    # given a backup, and afterwards new bytes written over one radiograph's file (the same name)
    radiografia = media_files(count=1)[0]
    path = radiografia.archivo.name
    backup = backup_create(context=CONTEXT)
    backup_time = live_files()[path]
    (media_dir / path).write_bytes(b"otra imagen")
    # when the clinic is restored
    from backups.restore import backup_restore_in_place

    backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    # then the file that was there is untouched, and the restored row names the backup-time bytes elsewhere
    assert (media_dir / path).read_bytes() == b"otra imagen"
    restored = Radiografia.objects.get(pk=radiografia.pk).archivo.name
    assert restored != path and restored.startswith(path.rsplit(".", 1)[0])
    assert hashlib.sha256((media_dir / restored).read_bytes()).hexdigest() == backup_time


def test_restore_into_a_new_clinic_brings_the_files_into_its_own_folder(committed_db, backups_dir, media_dir, media_files):
    # given a backup of a clinic with files, then the source clinic's files lost
    media_files(count=2)
    rows_at_backup, files_at_backup = clinic_rows(), live_files()
    backup = backup_create(context=CONTEXT)
    shutil.rmtree(media_dir)
    new_schema = f"test_restore_arch_{uuid.uuid4().hex[:6]}"
    try:
        # when it is restored as a new clinic
        backup_restore_as_new_tenant(context=CONTEXT, backup_id=backup.pk, schema_name=new_schema, nombre="Copia")
        connection.set_tenant(committed_db)
        # then the new clinic's rows name its own copies, with the backup-time bytes
        rename = new_clinic_rename("test_restore", new_schema)
        copy = live_files(new_schema)
        assert copy == {rename(path): sha256 for path, sha256 in files_at_backup.items()}
        assert len(committed_tables(new_schema)["clinica_radiografia"]) == len(rows_at_backup["clinica_radiografia"])
        # and it did not inherit the source clinic's backups (their objects are the source's)
        assert committed_tables(new_schema)["backups_backuprecord"] == []
    finally:
        connection.set_schema_to_public()
        Tenant.objects.filter(schema_name=new_schema).delete()
        schema_drop(new_schema)
        connection.set_tenant(committed_db)


class CountingStorage(FileSystemStorage):
    """A local storage that remembers every name written to it and every name read."""

    saved: list[str] = []
    opened: list[str] = []

    def _save(self, name, content):
        CountingStorage.saved.append(name)
        return super()._save(name, content)

    def _open(self, name, mode="rb"):
        CountingStorage.opened.append(name)
        return super()._open(name, mode)


@pytest.fixture
def counting_storages(settings, tmp_path, media_dir):
    backend = f"{__name__}.CountingStorage"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": backend, "OPTIONS": {"location": media_dir}},
        "backups": {"BACKEND": backend, "OPTIONS": {"location": tmp_path / "backups"}},
    }
    CountingStorage.saved, CountingStorage.opened = [], []
    return CountingStorage


def test_a_second_backup_uploads_no_file_and_a_new_radiograph_exactly_one(committed_db, counting_storages, media_files):
    # given a first backup of a clinic with radiographs
    media_files(count=2)
    first = backup_create(context=CONTEXT)
    first_uploads = [name for name in counting_storages.saved if "/files/" in name]
    assert len(first_uploads) == len({file_object_key("test_restore", sha) for sha in first.files.values_list("sha256", flat=True)})
    # when a second backup runs with nothing new
    counting_storages.saved.clear(), counting_storages.opened.clear()
    second = backup_create(context=CONTEXT)
    # then it uploads no file object and reads no unchanged file, yet names them all
    assert [name for name in counting_storages.saved if "/files/" in name] == []
    assert [name for name in counting_storages.opened if "/radiografias/" in name] == []
    assert sorted(second.files.values_list("path", "sha256")) == sorted(first.files.values_list("path", "sha256"))
    # when one radiograph is added, then the next backup uploads exactly that one
    new = media_files(count=1)[0]
    counting_storages.saved.clear()
    third = backup_create(context=CONTEXT)
    sha256 = third.files.get(path=new.archivo.name).sha256
    assert [name for name in counting_storages.saved if "/files/" in name] == [file_object_key("test_restore", sha256)]
    assert third.files_count == second.files_count + 1


class FullDiskStorage(FileSystemStorage):
    """A local storage whose disk fills up after its first two file objects."""

    lock = threading.Lock()
    file_objects = 0

    def _save(self, name, content):
        if "/files/" in name:
            with FullDiskStorage.lock:
                FullDiskStorage.file_objects += 1
                if FullDiskStorage.file_objects > 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
        return super()._save(name, content)


def test_a_file_upload_failing_on_a_worker_thread_fails_the_backup_cleanly(committed_db, settings, tmp_path, media_dir,
                                                                            media_files):
    # given a backups storage that fills up after two file objects, and more files than threads
    settings.STORAGES = {**settings.STORAGES,
                         "backups": {"BACKEND": f"{__name__}.FullDiskStorage", "OPTIONS": {"location": tmp_path / "backups"}}}
    FullDiskStorage.file_objects = 0
    media_files(count=10, size=64 * 1024)
    # when a backup runs, then it fails with a clear error rather than hanging or completing
    with pytest.raises(BackupFailedError):
        backup_create(context=CONTEXT)
    backup = BackupRecord.objects.order_by("-id").first()
    assert backup.status == BackupRecord.Status.FAILED and not (tmp_path / "backups" / backup.file_path).exists()
    entry = Bitacora.objects.filter(action="backup.create").order_by("-id").first()
    assert (entry.outcome, entry.target_id) == ("error", str(backup.pk)), entry.details
    # and its threads are gone, and every object it stored is named by its entries (retention finds them)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("backup-files")]
    stored = {path.name for path in (tmp_path / "backups").rglob("*") if path.is_file()}
    assert len(stored) == 2
    assert stored <= set(backup.files.values_list("sha256", flat=True))


def test_the_file_threads_upload_to_supabase_storage_each_object_whole(committed_db, settings, supabase_server, media_files):
    # given the backups in Supabase Storage, and more radiographs than the file phase has threads
    settings.STORAGES = {**settings.STORAGES, "backups": {
        "BACKEND": "backups.storage.supabase.SupabaseStorage",
        "OPTIONS": {"url": supabase_server.url, "key": supabase_server.key, "bucket": "backups"}}}
    settings.BACKUP_FILE_WORKERS = 4
    media_files(count=12, size=300 * 1024)
    # when a backup runs, then every content is one whole object on the server, and verify agrees
    backup = backup_create(context=CONTEXT)
    named = set(backup.files.values_list("sha256", flat=True))
    assert len(named) >= 12
    for sha256 in named:
        assert hashlib.sha256(supabase_server.read("backups", file_object_key("test_restore", sha256))).hexdigest() == sha256
    assert backup_verify(context=CONTEXT, backup=backup) == BackupRecord.Integrity.OK


def test_a_radiograph_added_or_deleted_during_the_backup_cannot_split_manifest_and_dump(
    committed_db, backups_dir, media_files, tmp_path,
):
    # given a clinic with radiographs, and a backup paused right after it took its snapshot
    kept, doomed = media_files(count=2)
    doomed_path = doomed.archivo.name
    with paused_at("backup.snapshot_taken", "create_backup", "--tenant", "test_restore",
                   backups_dir=backups_dir, log=tmp_path / "backup.log") as child:
        # when meanwhile one radiograph is added and another deleted (Django leaves the file)
        added = media_files(count=1)[0]
        Radiografia.objects.filter(pk=doomed.pk).delete()
    assert child.wait() == 0, (tmp_path / "backup.log").read_text()
    # then the dump and the file list agree: both as of the snapshot
    backup = BackupRecord.objects.filter(status="completed").latest("id")
    listed = set(backup.files.values_list("path", flat=True))
    assert listed == dump_paths(backup, backups_dir)
    assert doomed_path in listed and kept.archivo.name in listed and added.archivo.name not in listed
    # and the deleted radiograph's file is in the backup with its bytes
    assert backup.files.get(path=doomed_path).sha256 == live_files_of([doomed_path])[doomed_path]


def live_files_of(paths: list[str]) -> dict[str, str]:
    media = storages["default"]
    return {path: hashlib.sha256(media.open(path).read()).hexdigest() for path in paths}


def test_pruning_removes_only_the_file_objects_no_remaining_backup_names(committed_db, backups_dir, media_files):
    # given three backups: a radiograph only the first holds, one the first two hold, the rest in all
    only_first, first_two = media_files(count=2)
    first = backup_create(context=CONTEXT)
    Radiografia.objects.filter(pk=only_first.pk).delete()
    second = backup_create(context=CONTEXT)
    Radiografia.objects.filter(pk=first_two.pk).delete()
    third = backup_create(context=CONTEXT)
    sha_of = {entry.path: entry.sha256 for entry in first.files.all()}
    stored = lambda path: (backups_dir / file_object_key("test_restore", sha_of[path])).exists()  # noqa: E731
    # when retention keeps the newest two
    BackupRecord.objects.filter(pk=first.pk).update(created_at=first.created_at - timedelta(seconds=2))
    backup_prune(context=CONTEXT, apply=True, policy=RetentionPolicy(keep_last=2, daily=0, weekly=0, monthly=0, min_completed=0))
    # then only the first backup's own file went; every file a kept backup names is there
    assert not BackupRecord.objects.filter(pk=first.pk).exists()
    assert not stored(only_first.archivo.name)
    assert stored(first_two.archivo.name)
    for backup in (second, third):
        assert all((backups_dir / file_object_key("test_restore", sha)).exists()
                   for sha in backup.files.exclude(sha256="").values_list("sha256", flat=True))
    entry = Bitacora.objects.filter(action="backup.delete", target_id=str(first.pk)).get()
    assert entry.details["file_objects_deleted"] == 1


def test_verify_checks_every_file_object(committed_db, backups_dir, media_files):
    # given a backup with files
    media_files(count=2)
    backup = backup_create(context=CONTEXT)
    objects = [backups_dir / file_object_key("test_restore", sha) for sha in backup.files.values_list("sha256", flat=True)]
    assert backup_verify(context=CONTEXT, backup=backup) == "ok"
    # when one file object is damaged, then verify says so
    objects[0].write_bytes(b"x" + objects[0].read_bytes()[1:])
    assert backup_verify(context=CONTEXT, backup=backup) == "mismatch"
    # when one is gone, then it is missing
    objects[0].unlink()
    assert backup_verify(context=CONTEXT, backup=backup) == "missing"
    entry = Bitacora.objects.filter(action="backup.verify", target_id=str(backup.pk)).latest("id")
    assert entry.outcome == "error" and entry.details["files_bad"] == 1


def test_a_file_missing_at_backup_time_is_recorded_and_audited_and_the_backup_completes(committed_db, backups_dir, media_dir,
                                                                                       media_files):
    # given a radiograph whose file is gone from the media storage
    lost = media_files(count=1)[0]
    (media_dir / lost.archivo.name).unlink()
    # when the clinic is backed up
    backup = backup_create(context=CONTEXT)
    # then the backup completes, lists the file as missing, and the audit log says so with the backup
    assert backup.status == "completed"
    assert backup.files.get(path=lost.archivo.name).missing
    entry = Bitacora.objects.filter(action="backup.files", target_id=str(backup.pk)).get()
    assert entry.outcome == "error" and lost.archivo.name in entry.details["paths"]


def test_a_file_several_radiographs_name_is_listed_and_stored_once(committed_db, backups_dir, media_files):
    # given two radiographs naming the same file
    first = media_files(count=1)[0]
    twin = Radiografia.objects.create(paciente=first.paciente, archivo=first.archivo.name, tomada_en=first.tomada_en)
    # when the clinic is backed up
    backup = backup_create(context=CONTEXT)
    # then the file is one entry and one object
    assert backup.files.filter(path=twin.archivo.name).count() == 1
    assert backup.files_count == backup.files.count()
