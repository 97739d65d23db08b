"""Crypto-shredding a clinic (issue 20): after its keys are destroyed nothing opens its backups or files,
not even with a copy of the database from before, the platform identity and every data object kept.

Committed (marker `committed`), in the test_restore clinic.
"""
from __future__ import annotations

import shutil
import subprocess

import pyrage
import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.db import connection

from backups.errors import ClinicKeyMissingError, StorageObjectMissingError
from backups.models import BackupFile, BackupRecord
from backups.restore import backup_restore_in_place
from backups.services import backup_create, backup_verify, database_params, pg_binaries
from backups.storage.keys import keyring_for, platform_identities
from backups.storage.objects import backup_storage, storage_open
from backups.tests.conftest import raw_objects
from bitacora.models import Bitacora
from bitacora.services import AuditContext
from clinica.models import Paciente
from core.testing import committed_tables

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-destruccion")
SCHEMA = "test_restore"


def _database_copy() -> bytes:
    """The whole test database as pg_dump writes it: every schema, every row."""
    params = database_params()
    return subprocess.run([str(pg_binaries().pg_dump), "--no-owner", "--no-privileges"], env=params.environ(),
                          capture_output=True, check=True).stdout


def _sealed_clinic(media_files) -> list[BackupRecord]:
    """Two sealed backups with radiographs, a key rotation between them: two keys, contents under both."""
    media_files(count=2)
    first = backup_create(context=CONTEXT)
    call_command("rotate_backup_key", "--tenant", SCHEMA)
    media_files(count=1)
    return [first, backup_create(context=CONTEXT)]


def _data() -> dict:
    return committed_tables(SCHEMA, exclude=("backups_backuprecord", "backups_backupfile", "backups_restorejob",
                                             "backups_restorefile", "bitacora_bitacora"))


def test_after_a_shred_nothing_opens_the_clinics_backups_with_the_old_database_the_platform_key_and_every_object(
    committed_db, sealed, backups_dir, media_files, tmp_path, age_cli,
):
    # given sealed backups of the clinic, under two keys
    backups = _sealed_clinic(media_files)
    keys = keyring_for(backup_storage().inner).keys(SCHEMA, fresh=True)
    assert len(keys) == 2
    # and, kept by an adversary: a copy of the database from before the shred (the backups' records and their
    # files' rows with it), every data object of the clinic, and the platform's identity
    database = _database_copy()
    records = [(backup, list(backup.files.all())) for backup in backups]
    objects = {name: data for name, data in raw_objects(backups_dir).items() if f"{SCHEMA}/keys/" not in name}
    assert len(objects) >= 7  # 2 dumps, 2 lists, 3 contents
    platform_file = tmp_path / "plataforma.txt"
    shutil.copy(sealed.BACKUP_PLATFORM_IDENTITY_FILE, platform_file)
    # (the database never held a clinic key: not the identity, not its names secret)
    for key in keys:
        assert str(key.identity).encode() not in database and key.names_secret.hex().encode() not in database
    assert b"AGE-SECRET-KEY-1" not in database
    # when the clinic's keys are shredded
    call_command("shred_backup_keys", "--tenant", SCHEMA, "--confirm", SCHEMA)
    # then its keys folder is empty, its objects and records are gone, and the shred is in its audit log
    assert not [name for name in raw_objects(backups_dir) if name.startswith(f"{SCHEMA}/")]
    assert not BackupRecord.objects.exists()
    entry = Bitacora.objects.filter(action="backup.keys_shred").order_by("-id").first()
    assert entry.outcome == "ok" and entry.details["keys_deleted"] == 2 and entry.details["left_plain"] == 0
    # when every data object is put back, as if deleting them had failed, and the old records with them
    for name, data in objects.items():
        (backups_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (backups_dir / name).write_bytes(data)
    for backup, files in records:
        backup.save(force_insert=True)
        BackupFile.objects.bulk_create(files)
    # then none of them opens through the service: not a dump, not a list, not a file
    before = _data()
    for backup, files in records:
        for name in [backup.file_path, backup.manifest["files"]["list"]["object"]]:
            with pytest.raises(ClinicKeyMissingError):
                storage_open(name)
        for entry in (entry for entry in files if entry.sha256):  # a content's stored name was a keyed hash: without the keys it cannot even be found
            with pytest.raises(StorageObjectMissingError):
                storage_open(f"{SCHEMA}/files/{entry.sha256[:2]}/{entry.sha256}")
        assert backup_verify(context=CONTEXT, backup=backup) == BackupRecord.Integrity.MISSING
        with pytest.raises(StorageObjectMissingError):
            backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm=SCHEMA)
    assert _data() == before
    # nor with the platform's identity, by pyrage or by the age CLI
    for name, data in objects.items():
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(data, list(platform_identities()))
        opened = subprocess.run([age_cli, "-d", "-i", str(platform_file), str(backups_dir / name)], capture_output=True)
        assert opened.returncode != 0 and opened.stdout == b"", name
    # and a new backup of the clinic gets a new key, and works
    BackupRecord.objects.all().delete()
    assert backup_verify(context=CONTEXT, backup=backup_create(context=CONTEXT)) == BackupRecord.Integrity.OK


class KeysStayStorage(FileSystemStorage):
    """A backups storage whose deletes of key objects silently do nothing (a policy, a bug, a replica)."""

    def delete(self, name):
        if "/keys/" not in name:
            super().delete(name)


def test_a_shred_that_cannot_delete_a_key_fails_loudly_and_changes_nothing_else(committed_db, sealed, settings,
                                                                                backups_dir, media_files):
    backups = _sealed_clinic(media_files)
    settings.STORAGES = {**settings.STORAGES, "backups": {"BACKEND": f"{__name__}.KeysStayStorage",
                                                          "OPTIONS": {"location": backups_dir}}}
    stored = raw_objects(backups_dir)
    with pytest.raises(CommandError, match="No se pudieron destruir todas las claves"):
        call_command("shred_backup_keys", "--tenant", SCHEMA, "--confirm", SCHEMA)
    # nothing else changed: every object, every record; and the failure is audited
    assert raw_objects(backups_dir) == stored
    assert BackupRecord.objects.filter(pk__in=[backup.pk for backup in backups]).count() == 2
    assert all(backup_verify(context=CONTEXT, backup=backup) == "ok" for backup in backups)
    entry = Bitacora.objects.filter(action="backup.keys_shred").order_by("-id").first()
    assert (entry.outcome, entry.details["code"]) == ("error", "backup_keys_shred_incomplete")


def test_a_shred_needs_the_clinics_name_as_confirmation(committed_db, sealed, backups_dir, monkeypatch):
    backup_create(context=CONTEXT)
    stored = raw_objects(backups_dir)
    with pytest.raises(CommandError, match="no se tocó nada"):
        monkeypatch.setattr("builtins.input", lambda prompt: "otra_clinica")
        call_command("shred_backup_keys", "--tenant", SCHEMA)
    with pytest.raises(CommandError):
        call_command("shred_backup_keys", "--tenant", SCHEMA, "--confirm", "test_a")
    assert raw_objects(backups_dir) == stored and connection.schema_name == SCHEMA
    assert Paciente.objects.exists()
