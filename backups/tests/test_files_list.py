"""The file list beside each dump: its content, its lifecycle with the dump, and verify.

Committed (marker `committed`), in the test_restore clinic, as test_files: the file list
is read from the dump's own snapshot, which sees only committed rows.
"""
from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from backups.errors import StorageUnavailableError
from backups.files.list import file_list_key
from backups.models import BackupRecord
from backups.services import backup_create, backup_delete, backup_run, backup_start, backup_verify
from bitacora.models import Bitacora
from bitacora.services import AuditContext

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-lista-archivos")


def list_lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(data).splitlines()]


def test_a_backup_stores_its_file_list_beside_its_dump_as_its_entries(committed_db, backups_dir, media_dir, media_files):
    # given radiographs with their files, and one whose file is gone
    lost = media_files(count=2)[0]
    (media_dir / lost.archivo.name).unlink()
    # when the clinic is backed up
    backup = backup_create(context=CONTEXT)
    # then its list sits beside the dump, with the stem of the dump, and the manifest has its checksum
    listed = backup.manifest["files"]["list"]
    assert listed["object"] == backup.file_path.removesuffix(".sql.gz") + ".files.jsonl.gz"
    data = (backups_dir / listed["object"]).read_bytes()
    assert listed["sha256"] == hashlib.sha256(data).hexdigest() and listed["size"] == len(data)
    # and its lines are a header naming the dump, then exactly the backup's entries in path order
    header, *entries = list_lines(data)
    assert header == {
        "format": "clinica-backup-files", "version": 1, "schema": "test_restore", "file_name": backup.file_name,
        "created_at": backup.created_at.isoformat(), "sha256": backup.sha256, "sql_sha256": backup.sql_sha256,
        "storage_prefix": "test_restore/files/", "hash": "sha256",
        "count": backup.files.count(), "size": backup.files_size, "missing": backup.files.filter(sha256="").count(),
    }
    assert entries == [{"path": path, "sha256": sha256 or None, "size": size}
                       for path, sha256, size in backup.files.order_by("path").values_list("path", "sha256", "size")]
    assert {"path": lost.archivo.name, "sha256": None, "size": 0} in entries


def test_deleting_a_backup_removes_its_file_list_even_when_it_is_already_gone(committed_db, backups_dir, media_files):
    # given two backups with their lists
    media_files(count=1)
    first, second = backup_create(context=CONTEXT), backup_create(context=CONTEXT)
    first_list, second_list = (backups_dir / backup.manifest["files"]["list"]["object"] for backup in (first, second))
    # when the first is deleted, then its dump and its list are gone, the second's are not
    backup_delete(context=CONTEXT, backup_id=first.pk)
    assert not (backups_dir / first.file_path).exists() and not first_list.exists()
    assert second_list.exists()
    # when the second's list is already gone, deleting it still succeeds
    second_list.unlink()
    backup_delete(context=CONTEXT, backup_id=second.pk)
    assert not BackupRecord.objects.filter(pk=second.pk).exists()
    assert not (backups_dir / second.file_path).exists()


@pytest.mark.parametrize("retry_transient", [False, True])
def test_a_backup_failing_once_its_list_is_stored_leaves_no_list_and_no_dump(
    committed_db, settings, supabase_server, media_files, retry_transient,
):
    # given Supabase Storage that stores the file list, then drops the connection before answering
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {"BACKEND": "backups.storage.supabase.SupabaseStorage",
                    "OPTIONS": {"url": supabase_server.url, "key": supabase_server.key, "bucket": "backups"}},
    }
    media_files(count=1)
    supabase_server.hang_up_after_storing = ".files.jsonl.gz"
    # when a backup runs (as a job that retries later, or not)
    backup = backup_start(context=CONTEXT)
    try:
        with pytest.raises(StorageUnavailableError):
            backup_run(context=CONTEXT, backup_id=backup.pk, retry_transient=retry_transient)
        # then it stored its list, and removed it with the dump: only content objects are left
        assert any(upload.name == file_list_key(backup.file_path) for upload in supabase_server.uploads)
        assert [name for _bucket, name in supabase_server.objects if "/files/" not in name] == []
        backup.refresh_from_db()
        assert backup.status == ("pending" if retry_transient else "failed")
    finally:
        # Committed: a record left pending would hold the clinic busy for the tests after this one.
        BackupRecord.objects.filter(pk=backup.pk).delete()


def test_verify_reports_a_damaged_or_missing_file_list(committed_db, backups_dir, media_files):
    # given a backup with its list
    media_files(count=1)
    backup = backup_create(context=CONTEXT)
    stored = backups_dir / backup.manifest["files"]["list"]["object"]
    assert backup_verify(context=CONTEXT, backup=backup) == "ok"
    # when its list is changed, then verify says it does not match, naming the list
    stored.write_bytes(gzip.compress(gzip.decompress(stored.read_bytes()) + b'{"path":"x","sha256":null,"size":0}\n'))
    assert backup_verify(context=CONTEXT, backup=backup) == "mismatch"
    entry = Bitacora.objects.filter(action="backup.verify", target_id=str(backup.pk)).latest("id")
    assert entry.details["file_problems"][0]["object"] == str(stored.relative_to(backups_dir))
    assert entry.details["file_problems"][0]["problem"] == "mismatch"
    # when it is gone, then it is missing
    stored.unlink()
    assert backup_verify(context=CONTEXT, backup=backup) == "missing"
    entry = Bitacora.objects.filter(action="backup.verify", target_id=str(backup.pk)).latest("id")
    assert entry.details["file_problems"] == [{"object": str(stored.relative_to(backups_dir)), "problem": "missing"}]


def test_a_backup_made_before_file_lists_verifies_as_before(committed_db, backups_dir, media_files):
    # given a backup whose manifest names no list, and no list stored (as before this format existed)
    media_files(count=1)
    backup = backup_create(context=CONTEXT)
    (backups_dir / backup.manifest["files"].pop("list")["object"]).unlink()
    BackupRecord.objects.filter(pk=backup.pk).update(manifest=backup.manifest)
    # when it is verified, then it is ok and no problem is reported
    assert backup_verify(context=CONTEXT, backup=backup) == "ok"
    entry = Bitacora.objects.filter(action="backup.verify", target_id=str(backup.pk)).latest("id")
    assert entry.details["file_problems"] == []


def test_the_list_key_is_the_dumps_with_its_own_suffix():
    assert file_list_key("c/manual/backup_c_2025-01-31_03-00-00-1.sql.gz") == "c/manual/backup_c_2025-01-31_03-00-00-1.files.jsonl.gz"
    # a record made by hand names no dump the pipeline wrote: it has no list
    assert file_list_key("backups/clinica_demo/test.sql") is None
