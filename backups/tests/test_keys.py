"""Clinic keys (issue 20): where they live and what wraps what, a clinic key's rotation, the platform's.

Committed (marker `committed`), in the test_restore clinic.
"""
from __future__ import annotations

import gzip
import re

import pyrage
import pytest
from django.core.management import CommandError, call_command
from pyrage import x25519

from backups.models import BackupRecord
from backups.restore import backup_restore_in_place
from backups.services import backup_create, backup_verify
from backups.storage.keys import keys_rotate, platform_identities
from backups.storage.objects import backup_storage
from backups.tests.conftest import raw_objects
from bitacora.models import Bitacora
from bitacora.services import AuditContext

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-claves")
KEY_NAME = re.compile(r"test_restore/keys/(\d{8}T\d{12}Z-[0-9a-f]{6})\.([0-9a-f]{16})\.age")


def _keys(backups_dir, clinic: str = "test_restore") -> dict[str, bytes]:
    return {name: data for name, data in raw_objects(backups_dir).items() if name.startswith(f"{clinic}/keys/")}


def _unwrapped(wrapped: bytes, identities) -> tuple[x25519.Identity, str]:
    """A key object opened with the platform's identities: the clinic's identity, and the identity file's text."""
    text = pyrage.decrypt(wrapped, list(identities)).decode()
    (line,) = [line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-1")]
    return x25519.Identity.from_str(line), text


def _opens(data: bytes, identity: x25519.Identity) -> bool:
    try:
        pyrage.decrypt(data, [identity])
    except pyrage.DecryptError:
        return False
    return True


def test_a_clinic_key_lives_beside_its_backups_wrapped_to_the_platform_and_opens_them_alone(committed_db, sealed,
                                                                                            backups_dir):
    # when a sealed backup is made
    backup = backup_create(context=CONTEXT)
    # then the clinic's one key is stored beside its backups, named by its id and its wrap
    (name, wrapped), = _keys(backups_dir).items()
    key_id = KEY_NAME.fullmatch(name)[1]
    assert backup.manifest["encryption"] == {"format": "age-encryption.org/v1", "key_id": key_id,
                                             "recipient": backup.manifest["encryption"]["recipient"]}
    # and the platform identity opens it: an age identity file whose public key sealed the dump
    identity, text = _unwrapped(wrapped, platform_identities())
    assert f"# public key: {backup.manifest['encryption']['recipient']}" in text
    assert str(identity.to_public()) == backup.manifest["encryption"]["recipient"]
    stored = raw_objects(backups_dir)[backup.file_path + ".age"]
    assert gzip.decompress(pyrage.decrypt(stored, [identity])).startswith(b"--\n-- PostgreSQL database dump")
    # and no other identity opens either
    stranger = x25519.Identity.generate()
    assert not _opens(wrapped, stranger) and not _opens(stored, stranger)
    assert not _opens(stored, platform_identities()[0])  # the platform's key opens keys, never data


def test_rotating_a_clinic_key_seals_new_backups_with_it_and_old_ones_stay_readable(committed_db, sealed, backups_dir,
                                                                                    media_files):
    # given a sealed backup with radiographs
    media_files(count=2)
    old = backup_create(context=CONTEXT)
    # when the clinic's key is rotated, a radiograph added, and another backup made
    call_command("rotate_backup_key", "--tenant", "test_restore")
    added = media_files(count=1)[0]
    new = backup_create(context=CONTEXT)
    # then the new backup names the new key, and each dump opens with its own key only
    keys = {KEY_NAME.fullmatch(name)[1]: _unwrapped(wrapped, platform_identities())[0]
            for name, wrapped in _keys(backups_dir).items()}
    assert len(keys) == 2 and new.manifest["encryption"]["key_id"] == max(keys) != old.manifest["encryption"]["key_id"]
    stored = raw_objects(backups_dir)
    old_key, new_key = keys[old.manifest["encryption"]["key_id"]], keys[new.manifest["encryption"]["key_id"]]
    assert _opens(stored[old.file_path + ".age"], old_key) and not _opens(stored[old.file_path + ".age"], new_key)
    assert _opens(stored[new.file_path + ".age"], new_key) and not _opens(stored[new.file_path + ".age"], old_key)
    # and the new backup stored only the new content (its names did not change), sealed to the new key
    assert new.manifest["files"]["uploaded"] == 1
    added_sha = new.files.get(path=added.archivo.name).sha256
    with backup_storage().open(f"test_restore/files/{added_sha[:2]}/{added_sha}") as content:
        assert content.read() == added.archivo.open("rb").read()
    # and both backups verify, and the old one restores
    assert backup_verify(context=CONTEXT, backup=old) == backup_verify(context=CONTEXT, backup=new) == "ok"
    backup_restore_in_place(context=CONTEXT, backup_id=old.pk, confirm="test_restore")
    assert Bitacora.objects.filter(action="backup.key_rotate", outcome="ok",
                                   details__key_id=new.manifest["encryption"]["key_id"]).exists()


def _new_platform(settings) -> tuple[str, x25519.Identity]:
    current = settings.BACKUP_PLATFORM_IDENTITY_FILE.read_text()
    return current, x25519.Identity.generate()


def test_rewrapping_moves_every_clinic_key_to_the_new_platform_key_without_touching_a_backup(committed_db, sealed,
                                                                                             backups_dir, settings):
    # given a sealed backup, and the keys of a clinic no longer registered (its backups remain)
    backup = backup_create(context=CONTEXT)
    keys_rotate(backup_storage().inner, "clinica_borrada")
    data_before = {name: data for name, data in raw_objects(backups_dir).items() if "/keys/" not in name}
    old_identity, new = _new_platform(settings)
    # when the platform gets a new key (the old identity still held) and every clinic key is rewrapped
    settings.BACKUP_PLATFORM_RECIPIENTS = [str(new.to_public())]
    settings.BACKUP_PLATFORM_IDENTITY = f"{old_identity}\n{new}"
    call_command("rewrap_backup_keys", "--all-tenants")
    # then every key object is wrapped to the new key only: the old platform identity opens none
    keys = {**_keys(backups_dir), **_keys(backups_dir, "clinica_borrada")}
    assert len(keys) == 2 and len({name.rsplit(".", 2)[1] for name in keys}) == 1
    for wrapped in keys.values():
        _unwrapped(wrapped, [new])
        assert not _opens(wrapped, x25519.Identity.from_str(old_identity.strip().splitlines()[-1]))
    # and no backup object changed
    assert {name: data for name, data in raw_objects(backups_dir).items() if "/keys/" not in name} == data_before
    # and with the old platform key retired, the backups still open
    settings.BACKUP_PLATFORM_IDENTITY = str(new)
    assert backup_verify(context=CONTEXT, backup=BackupRecord.objects.get(pk=backup.pk)) == "ok"
    # and running it again has nothing to do
    call_command("rewrap_backup_keys", "--all-tenants")
    assert {**_keys(backups_dir), **_keys(backups_dir, "clinica_borrada")} == keys


def test_a_rewrap_to_a_key_the_service_could_not_open_is_refused_and_changes_nothing(committed_db, sealed, backups_dir,
                                                                                     settings):
    backup_create(context=CONTEXT)
    keys = _keys(backups_dir)
    _old_identity, new = _new_platform(settings)
    # the new recipient configured, but its identity not: a rewrapped key could never be read again
    settings.BACKUP_PLATFORM_RECIPIENTS = [str(new.to_public())]
    with pytest.raises(CommandError, match="BACKUP_PLATFORM_IDENTITY"):
        call_command("rewrap_backup_keys", "--all-tenants")
    assert _keys(backups_dir) == keys


@pytest.mark.no_test_db
def test_make_demos_platform_identity_is_made_once_mode_0600_and_says_production_needs_its_own(tmp_path, capsys):
    path = tmp_path / "keys" / "platform-identity.txt"
    call_command("create_platform_identity", "--path", str(path))
    first = capsys.readouterr().out
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    (identity,) = [line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1")]
    public = str(x25519.Identity.from_str(identity).to_public())
    assert str(path) in first and public in first and "producción" in first and "BACKUP_PLATFORM_IDENTITY" in first
    # run again (every make demo), the identity stays the one its backups were sealed for
    call_command("create_platform_identity", "--path", str(path))
    assert public in capsys.readouterr().out and identity in path.read_text()
