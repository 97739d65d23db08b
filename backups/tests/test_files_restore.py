"""A restore's file phase on its worker threads: more files than threads, from Supabase Storage,
and a damaged content object failing the restore with no thread left and the live clinic untouched.

Committed tests in the test_restore clinic, as in test_files (whose helpers they use).
"""
from __future__ import annotations

import hashlib
import os
import threading
import uuid
from datetime import date

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from backups.errors import BackupChecksumMismatchError
from backups.files.media import file_object_key
from backups.restore import backup_restore_as_new_tenant, backup_restore_in_place
from backups.services import backup_create
from backups.tests.test_files import CONTEXT, clinic_rows, live_files
from bitacora.models import Bitacora
from clinica.models import Radiografia
from core.models import Tenant
from core.schemas import operation_schemas_left, schema_drop

pytestmark = pytest.mark.committed


def restore_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("restore-files")]


def test_a_restore_brings_back_more_files_than_threads_from_supabase_storage_byte_identical(
    committed_db, settings, supabase_server, media_dir, media_files,
):
    # given the backups in Supabase Storage, and a backup of a dozen radiographs of 256 KiB (3 per thread)
    settings.STORAGES = {**settings.STORAGES, "backups": {
        "BACKEND": "backups.storage.supabase.SupabaseStorage",
        "OPTIONS": {"url": supabase_server.url, "key": supabase_server.key, "bucket": "backups"}}}
    settings.BACKUP_FILE_WORKERS = 4
    media_files(count=12, size=256 * 1024)
    rows_at_backup, files_at_backup = clinic_rows(), live_files()
    backup = backup_create(context=CONTEXT)
    # and then every file lost from the media storage
    for path in files_at_backup:
        (media_dir / path).unlink()
    assert set(live_files().values()) == {""}
    # when the clinic is restored
    backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    # then every file is back at its path with its backup-time bytes, and the rows as they were
    assert live_files() == files_at_backup
    assert clinic_rows() == rows_at_backup
    entry = Bitacora.objects.filter(action="backup.restore", target_id=str(backup.pk), outcome="ok").latest("id")
    assert entry.details["files_written"] == len(files_at_backup) >= 12
    assert entry.details["files_checked"] == len(files_at_backup) and entry.details["files_renamed"] == 0
    assert restore_threads() == []


def test_a_damaged_content_object_fails_the_restore_with_no_thread_left_and_the_live_clinic_untouched(
    committed_db, settings, backups_dir, media_dir, media_files,
):
    # given a backup of a dozen radiographs, then most of their files lost and one overwritten
    settings.BACKUP_FILE_WORKERS = 4
    radiografias = media_files(count=12, size=256 * 1024)
    backup = backup_create(context=CONTEXT)
    kept, overwritten, *lost = [radiografia.archivo.name for radiografia in radiografias]
    for path in lost:
        (media_dir / path).unlink()
    (media_dir / overwritten).write_bytes(b"la radiografia nueva")
    Radiografia.objects.filter(archivo=kept).update(descripcion="Cambiada")
    # and the content object of a lost file in the middle damaged in the backups storage
    damaged = backup.files.get(path=lost[5])
    (backups_dir / file_object_key("test_restore", damaged.sha256)).write_bytes(b"otros bytes" * 1000)
    rows_before, files_before = clinic_rows(), live_files()
    # when the clinic is restored, then it fails with the checksum error
    with pytest.raises(BackupChecksumMismatchError):
        backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    # and no file thread is left running, nor the staging schema
    assert restore_threads() == []
    assert "test_restore" not in operation_schemas_left()
    # and the live rows are unchanged, and every file that was there still has its bytes
    assert clinic_rows() == rows_before
    files_now = live_files()
    assert {path: files_now[path] for path, sha256 in files_before.items() if sha256} == {
        path: sha256 for path, sha256 in files_before.items() if sha256
    }
    assert (media_dir / overwritten).read_bytes() == b"la radiografia nueva"
    # (a lost file's free name may have been written, only ever with its backup-time bytes, never the damaged ones)
    at_backup = dict(backup.files.values_list("path", "sha256"))
    assert all(files_now[path] in ("", at_backup[path]) for path in lost)
    assert not (media_dir / damaged.path).exists()
    assert hashlib.sha256(b"otros bytes" * 1000).hexdigest() not in files_now.values()


def test_two_paths_renamed_to_one_name_in_a_new_clinic_each_keep_their_own_content(committed_db, backups_dir, media_dir,
                                                                                  media_files):
    # given two radiographs whose paths a new clinic's folder maps to one name: the clinic's
    # own `test_restore/radiografias/x.png` and a bare `radiografias/x.png`, with other bytes
    media_files()
    paciente = Radiografia.objects.order_by("pk").first().paciente
    contents = {}
    for path in ("test_restore/radiografias/doble.png", "radiografias/doble.png"):
        (media_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (media_dir / path).write_bytes(contents.setdefault(path, os.urandom(3000)))
        Radiografia.objects.create(paciente=paciente, tomada_en=date.today(), descripcion="Doble", archivo=path)
    backup = backup_create(context=CONTEXT)
    new_schema = f"test_restore_dbl_{uuid.uuid4().hex[:6]}"
    try:
        # when the backup is restored as a new clinic
        backup_restore_as_new_tenant(context=CONTEXT, backup_id=backup.pk, schema_name=new_schema, nombre="Copia")
        # then it succeeds, and each row names a file of its own with its own backup-time bytes
        with schema_context(new_schema):
            named = dict(Radiografia.objects.filter(descripcion="Doble").values_list("pk", "archivo"))
        with schema_context("test_restore"):
            sources = dict(Radiografia.objects.filter(descripcion="Doble").values_list("pk", "archivo"))
        assert len(set(named.values())) == 2
        for pk, source in sources.items():
            assert (media_dir / named[pk]).read_bytes() == contents[source]
    finally:
        connection.set_schema_to_public()
        Tenant.objects.filter(schema_name=new_schema).delete()
        schema_drop(new_schema)
        connection.set_tenant(committed_db)
