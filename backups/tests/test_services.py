import hashlib

import pytest
from django.db import connection

from backups.errors import BackupFailedError, StorageError
from backups.models import BackupRecord
from backups.errors import DumpError, PgVersionMismatchError
from backups.services import backup_create, pg_binaries
from bitacora.models import Bitacora
from bitacora.services import AuditContext
from core.errors import OperationInProgressError
from core.locks import tenant_operation_lock
from core.testing import operation_lock_held_elsewhere

CONTEXT = AuditContext.system("prueba")


def _fake_bin_dir(tmp_path, *, version_script: str, dump_script: str):
    """A bin directory whose pg_dump is a script: what a broken or wrong client looks like from outside."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pg_dump = bin_dir / "pg_dump"
    pg_dump.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then {version_script}; fi\n{dump_script}\n')
    pg_dump.chmod(0o755)
    (bin_dir / "psql").symlink_to(pg_binaries().psql)
    return bin_dir


def _stored_files(location) -> list:
    return [path for path in location.rglob("*") if path.is_file()] if location.exists() else []


def test_pg_dump_failing_mid_stream_leaves_a_failed_record_and_no_object(tenant_a, backups_dir, tmp_path, settings):
    # given a pg_dump of the right version that dies after writing part of a dump (and backups
    # that use it: no cached structure)
    settings.BACKUP_STRUCTURE_CACHE = False
    real = pg_binaries().pg_dump
    settings.PG_BIN_DIR = str(_fake_bin_dir(
        tmp_path,
        version_script=f'exec "{real}" --version',
        dump_script='echo "CREATE TABLE parcial (id int);"; echo "pg_dump: error: connection to server lost" >&2; exit 1',
    ))
    # when
    with pytest.raises(DumpError) as raised:
        backup_create(context=CONTEXT)
    # then
    assert "connection to server lost" in str(raised.value.message)
    backup = BackupRecord.objects.order_by("-id").first()
    assert backup.status == "failed" and "connection to server lost" in backup.error and backup.finished_at
    assert backup.sha256 == ""
    assert _stored_files(backups_dir) == []
    entry = Bitacora.objects.filter(action="backup.create").order_by("-id").first()
    assert entry.outcome == "error" and entry.details["code"] == "backup_dump_failed"


def test_pg_dump_of_another_major_version_is_refused_before_any_work(tenant_a, backups_dir, tmp_path, settings):
    # given a configured pg_dump 9.6 against a newer server
    settings.PG_BIN_DIR = str(_fake_bin_dir(
        tmp_path, version_script='echo "pg_dump (PostgreSQL) 9.6.24"; exit 0', dump_script="exit 99"
    ))
    before = BackupRecord.objects.count()
    # when
    with pytest.raises(PgVersionMismatchError) as raised:
        backup_create(context=CONTEXT)
    # then the message names both versions, and nothing was written
    message = str(raised.value.message)
    assert f"PostgreSQL {connection.pg_version // 10000}" in message and "9.6.24" in message
    assert BackupRecord.objects.count() == before
    assert _stored_files(backups_dir) == []
    entry = Bitacora.objects.filter(action="backup.create").order_by("-id").first()
    assert entry.outcome == "error" and entry.details["code"] == "pg_dump_version_mismatch"


def test_a_second_backup_while_one_runs_gets_409(client_for, tenant_a, backups_dir):
    # given another session holding clinic A's operation lock (a backup in progress)
    with operation_lock_held_elsewhere("test_a"):
        # when a backup is requested
        response = client_for("test_a", "admin").post("/api/backups/create/", {}, content_type="application/json")
    # then
    assert response.status_code == 409
    assert response.json()["code"] == "backup_in_progress"
    assert _stored_files(backups_dir) == []
    # and once the lock is free, a backup goes through
    assert client_for("test_a", "admin").post("/api/backups/create/", {}, content_type="application/json").status_code == 201


def test_the_lock_is_per_clinic(tenant_a):
    # given clinic A's lock held by another session
    with operation_lock_held_elsewhere("test_a"):
        # when this session tries both clinics, then only A is busy
        with tenant_operation_lock("test_b"):
            pass
        with pytest.raises(OperationInProgressError):
            with tenant_operation_lock("test_a"):
                pass


def test_unexpected_failure_is_wrapped_and_recorded(tenant_a, backups_dir, settings):
    # given a storage that cannot be written to (its location is a file)
    blocker = backups_dir.parent / "not-a-dir"
    blocker.write_text("x")
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": blocker}},
    }
    with pytest.raises(BackupFailedError):
        backup_create(context=CONTEXT)
    backup = BackupRecord.objects.order_by("-id").first()
    assert backup.status == "failed" and backup.error


def test_storage_failing_mid_upload_leaves_a_failed_record_and_no_object(tenant_a, settings, supabase_server, clinic_data):
    # given Supabase Storage that hangs up after the first 4 KiB of the upload
    # (the real server behind a proxy that drops the connection)
    supabase_server.fail_upload_after = 4096
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "backups.storage.supabase.SupabaseStorage",
            "OPTIONS": {"url": supabase_server.url, "key": supabase_server.key, "bucket": "backups"},
        },
    }
    # when
    with pytest.raises(StorageError):
        backup_create(context=CONTEXT)
    # then
    backup = BackupRecord.objects.order_by("-id").first()
    assert backup.status == "failed" and backup.error and backup.sha256 == ""
    assert supabase_server.objects == {}
    entry = Bitacora.objects.filter(action="backup.create").order_by("-id").first()
    assert entry.outcome == "error" and entry.details["code"] == "storage_unavailable"
    assert supabase_server.key not in backup.error


def test_backup_round_trip_through_supabase_storage(tenant_a, settings, supabase_server, clinic_data):
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "backups.storage.supabase.SupabaseStorage",
            "OPTIONS": {"url": supabase_server.url, "key": supabase_server.key, "bucket": "backups"},
        },
    }
    backup = backup_create(context=CONTEXT)
    stored = supabase_server.read("backups", backup.file_path)
    assert len(stored) == backup.file_size
    assert hashlib.sha256(stored).hexdigest() == backup.sha256
