"""The sealed storage layer itself (backups.storage.sealed): large objects, keys made elsewhere, names."""
from __future__ import annotations

import hashlib
import os

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from backups.errors import SealedObjectDamagedError
from backups.storage.age_format import MAGIC
from backups.storage.keys import keys_rotate
from backups.storage.objects import backup_storage
from backups.storage.sealed import SMALL_MAX_BYTES, SealedStorage

pytestmark = pytest.mark.no_test_db
DUMP = "clinica_x/manual/backup_clinica_x_2026-01-01_03-00-00.sql.gz"


@pytest.mark.parametrize("size", [0, 1, SMALL_MAX_BYTES, SMALL_MAX_BYTES + 1, 3 * SMALL_MAX_BYTES + 12345])
def test_an_object_of_any_size_round_trips_sealed_and_size_is_its_plaintexts(sealed, backups_dir, size):
    data = os.urandom(size)
    store = backup_storage()
    assert store.save(DUMP, ContentFile(data)) == DUMP
    stored = (backups_dir / (DUMP + ".age")).read_bytes()
    assert stored.startswith(MAGIC)
    assert size < 4096 or data[:4096] not in stored
    with store.open(DUMP) as opened:
        assert opened.size == size and hashlib.sha256(opened.read()).digest() == hashlib.sha256(data).digest()
    assert store.exists(DUMP) and store.size(DUMP) == size


@pytest.mark.parametrize("size", [SMALL_MAX_BYTES // 2, 3 * SMALL_MAX_BYTES])
def test_a_byte_changed_anywhere_in_a_small_or_large_object_is_refused(sealed, backups_dir, size):
    backup_storage().save(DUMP, ContentFile(os.urandom(size)))
    path = backups_dir / (DUMP + ".age")
    intact = path.read_bytes()
    for at in (0.001, 0.3, 0.9999):
        damaged = bytearray(intact)
        damaged[int(len(damaged) * at)] ^= 0x40
        path.write_bytes(bytes(damaged))
        with pytest.raises(SealedObjectDamagedError):
            backup_storage().open(DUMP)
    path.write_bytes(intact[:-1])  # cut short: the last chunk is missing its end
    with pytest.raises(SealedObjectDamagedError):
        backup_storage().open(DUMP)
    # a truncated object's size is not its plaintext's: a caller comparing sizes stores it again
    assert backup_storage().size(DUMP) != size


def test_an_object_sealed_to_a_key_another_process_made_since_opens(sealed, backups_dir):
    # given this process's keys of the clinic, read (and cached) before another process rotated them
    here = backup_storage()
    here.save(DUMP, ContentFile(b"antes"))
    elsewhere = SealedStorage(FileSystemStorage(location=backups_dir))  # another process: its own keyring
    keys_rotate(elsewhere.inner, "clinica_x")
    elsewhere.save(DUMP.replace("03-00-00", "04-00-00"), ContentFile(b"despues"))
    # when this process opens what the other sealed to the new key, then it reads the keys again and opens it
    with here.open(DUMP.replace("03-00-00", "04-00-00")) as opened:
        assert opened.read() == b"despues"


def test_a_name_outside_a_clinic_folder_or_in_its_keys_is_refused(sealed, backups_dir):
    for name in ["sin_carpeta.sql.gz", "clinica_x/keys/otra.age"]:
        with pytest.raises(Exception, match="clinic's folder"):
            backup_storage().save(name, ContentFile(b"x"))
    assert not [path for path in backups_dir.rglob("*") if path.is_file()]  # no key made, nothing stored
