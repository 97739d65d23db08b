"""Backups sealed at rest (issue 20): what the bucket holds, and every caller on top of it unchanged.

Committed (marker `committed`), in the test_restore clinic: a backup's file list and dump come
from a snapshot, which sees committed rows only.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from backups.errors import BackupChecksumMismatchError, EncryptionNotConfiguredError
from backups.files.media import file_object_key
from backups.jobs.reaper import reap
from backups.models import BackupRecord
from backups.restore import backup_restore_in_place
from backups.retention import RetentionPolicy, backup_prune
from backups.services import backup_create, backup_start, backup_verify
from backups.storage.age_format import MAGIC
from backups.storage.objects import backup_storage, storage_open
from backups.tests.conftest import raw_objects
from bitacora.services import AuditContext
from clinica.models import Paciente, Radiografia
from core.testing import committed_tables

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-cifrado")
# A radiograph as an image viewer would open it: a PNG signature, then text easy to look for.
PNG = b"\x89PNG\r\n\x1a\n" + b"IHDR radiografia panoramica, paciente de prueba " * 400
SUPABASE = "backups.storage.supabase.SupabaseStorage"


def _supabase(settings, server) -> None:
    settings.STORAGES = {**settings.STORAGES, "backups": {
        "BACKEND": SUPABASE, "OPTIONS": {"url": server.url, "key": server.key, "bucket": "backups"}}}


def _radiograph(content: bytes) -> Radiografia:
    return Radiografia.objects.create(paciente=Paciente.objects.order_by("pk").first(), tomada_en=date.today(),
                                      descripcion="Panorámica", archivo=ContentFile(content, name="panoramica.png"))


def _plain(name: str) -> bytes:
    with storage_open(name) as opened:
        return opened.read()


def _windows(data: bytes, size: int = 48) -> list[bytes]:
    """Slices of data spread over its whole length: any one found in an object would be a leak."""
    step = max(size, len(data) // 64)
    return [data[start:start + size] for start in range(0, max(1, len(data) - size), step)]


def _data() -> dict:
    return committed_tables("test_restore", exclude=("backups_backuprecord", "backups_backupfile", "backups_restorejob",
                                                     "backups_restorefile", "bitacora_bitacora"))


def test_the_bucket_read_raw_holds_no_byte_of_sql_json_or_image(committed_db, sealed, settings, supabase_server,
                                                                 media_files):
    # given a clinic with radiographs (one of them a PNG), backed up twice to Supabase Storage, sealed
    _supabase(settings, supabase_server)
    media_files(count=2)
    image = _radiograph(PNG)
    try:
        first = backup_create(context=CONTEXT)
        second = backup_create(context=CONTEXT)
        # what the service reads back: the dumps (gzip of SQL), the lists (gzip of JSON), the contents
        listed = [backup.manifest["files"]["list"]["object"] for backup in (first, second)]
        plaintexts = {name: _plain(name) for name in [first.file_path, second.file_path, *listed]}
        contents = dict(first.files.exclude(sha256="").values_list("sha256", "path"))
        plaintexts.update({sha256: _plain(file_object_key("test_restore", sha256)) for sha256 in contents})
        sql = gzip.decompress(plaintexts[first.file_path])
        entries = gzip.decompress(plaintexts[listed[0]])
        assert b"PostgreSQL database dump" in sql and b'"format":"clinica-backup-files"' in entries
        assert plaintexts[next(sha for sha, path in contents.items() if path == image.archivo.name)] == PNG
        # when the bucket is read raw, as a leak would read it
        objects = {name: supabase_server.read("backups", name) for (_bucket, name) in supabase_server.objects}
        # then every object is an age file, and none holds a byte of what it seals
        assert objects and all(data.startswith(MAGIC) for data in objects.values()), sorted(objects)
        needles = [b"PostgreSQL database dump", b"COPY ", b"CREATE TABLE", b'{"path":', b'{"format":', b"clinica-backup-files",
                   b"\x89PNG\r\n\x1a\n", b"radiografia panoramica", b"AGE-SECRET-KEY-", *contents, *(path.encode() for path in contents.values())]
        needles += [window for plaintext in plaintexts.values() for window in _windows(plaintext)]
        needles += [window for window in _windows(sql) + _windows(entries)]
        leaks = [(name, needle[:20]) for name, data in objects.items() for needle in needles
                 if (needle if isinstance(needle, bytes) else needle.encode()) in data]
        assert leaks == []
        # and no object's name tells a content's sha256 or a file's path
        assert not [name for name in objects if any(sha256 in name for sha256 in contents)]
        assert not [name for name in objects if "radiografias" in name or name.endswith((".gz", ".png"))]
        # and the second backup stored no content again (the same keyed names: deduplication is exact)
        assert second.manifest["files"]["uploaded"] == 0 and second.files_count == first.files_count
    finally:
        image.delete()


def test_downloads_deliver_the_sql_decrypted_with_checksums_of_what_is_sent(committed_db, sealed, backups_dir,
                                                                              client_for):
    backup = backup_create(context=CONTEXT)
    admin = client_for("test_restore", "admin")
    url = f"/api/backups/history/{backup.pk}/download/"
    stored = raw_objects(backups_dir)[backup.file_path + ".age"]
    assert stored.startswith(MAGIC)
    # the SQL, decompressed on the fly, saved as .sql
    response = admin.get(url, HTTP_ACCEPT_ENCODING="identity")
    sql = b"".join(response.streaming_content)
    assert response.status_code == 200 and sql.startswith(b"--\n-- PostgreSQL database dump")
    assert response["Content-Disposition"] == f'attachment; filename="{backup.file_name.removesuffix(".gz")}"'
    assert response["X-Checksum-SHA256"] == hashlib.sha256(sql).hexdigest() == backup.sql_sha256
    assert response["Content-Length"] == str(len(sql))
    # the gzip bytes, as Content-Encoding, saved as .sql
    response = admin.get(url, HTTP_ACCEPT_ENCODING="gzip")
    body = b"".join(response.streaming_content)
    assert response["Content-Encoding"] == "gzip" and gzip.decompress(body) == sql
    assert response["X-Checksum-SHA256"] == hashlib.sha256(body).hexdigest() == backup.sha256
    assert response["Content-Length"] == str(len(body)) == str(backup.file_size)
    # the .sql.gz itself, asked for by name
    response = admin.get(url + "?format=gz")
    body = b"".join(response.streaming_content)
    assert response["Content-Disposition"] == f'attachment; filename="{backup.file_name}"'
    assert hashlib.sha256(body).hexdigest() == response["X-Checksum-SHA256"] == backup.sha256
    assert body != stored


def test_verify_restore_retention_and_the_reaper_work_unchanged_on_sealed_backups(committed_db, sealed, backups_dir,
                                                                                   media_files):
    # given sealed backups of a clinic with radiographs
    media_files(count=2)
    older = backup_create(context=CONTEXT)
    at_backup_time = _data()
    newer = backup_create(context=CONTEXT)
    # then verify reads every object through its seal
    assert backup_verify(context=CONTEXT, backup=older) == BackupRecord.Integrity.OK
    # and a restore brings the clinic back to the backup, row by row
    Paciente.objects.filter(pk__in=Paciente.objects.order_by("pk").values("pk")[:3]).update(nombre="Cambiado")
    backup_restore_in_place(context=CONTEXT, backup_id=older.pk, confirm="test_restore")
    assert _data() == at_backup_time
    # and retention deletes a backup's sealed objects with it, and no content another backup names
    objects_before = set(raw_objects(backups_dir))
    backup_prune(context=CONTEXT, apply=True, now=None,
                 policy=RetentionPolicy(keep_last=1, daily=0, weekly=0, monthly=0, min_completed=1))
    assert not BackupRecord.objects.filter(pk=older.pk).exists()
    gone = objects_before - set(raw_objects(backups_dir))
    assert {older.file_path + ".age", older.manifest["files"]["list"]["object"] + ".age"} <= gone
    assert backup_verify(context=CONTEXT, backup=BackupRecord.objects.get(pk=newer.pk)) == BackupRecord.Integrity.OK
    # and the reaper removes what a backup killed mid-way left, sealed
    dead = backup_start(context=CONTEXT)
    backup_storage().save(dead.file_path, ContentFile(b"parte de un dump"))
    BackupRecord.objects.filter(pk=dead.pk).update(status=BackupRecord.Status.RUNNING)
    assert dead.file_path + ".age" in raw_objects(backups_dir)
    reap()
    assert dead.file_path + ".age" not in raw_objects(backups_dir)
    assert BackupRecord.objects.get(pk=dead.pk).status == BackupRecord.Status.FAILED


def _flip(path, at: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("at", [0.02, 0.5, 0.999])  # the header, the middle, the last chunk
def test_a_tampered_dump_fails_authentication_and_a_restore_refuses_it_before_touching_the_clinic(
    committed_db, sealed, backups_dir, client_for, at,
):
    # given a sealed backup, then one byte of its stored object changed
    backup = backup_create(context=CONTEXT)
    Paciente.objects.filter(pk=Paciente.objects.order_by("pk").values("pk")[:1]).update(nombre="Después del backup")
    before = _data()
    _flip(backups_dir / (backup.file_path + ".age"), at)
    # when it is restored, then the restore refuses it and nothing of the clinic changed
    with pytest.raises(BackupChecksumMismatchError):
        backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    assert _data() == before
    assert BackupRecord.objects.get(pk=backup.pk).integrity == BackupRecord.Integrity.MISMATCH
    # and verify says mismatch, and a download hands out nothing of it
    assert backup_verify(context=CONTEXT, backup=backup) == BackupRecord.Integrity.MISMATCH
    response = client_for("test_restore", "admin").get(f"/api/backups/history/{backup.pk}/download/")
    assert response.status_code == 409 and response.json()["code"] == "backup_object_not_authentic"


def test_a_tampered_or_replaced_content_or_list_fails_verify(committed_db, sealed, backups_dir, media_files):
    media_files(count=2)
    backup = backup_create(context=CONTEXT)
    entries = gzip.decompress(_plain(backup.manifest["files"]["list"]["object"])).splitlines()[1:]
    content = next(json.loads(line)["object"] for line in entries if json.loads(line)["sha256"])
    # a content object with a byte changed
    intact = (backups_dir / content).read_bytes()
    _flip(backups_dir / content, 0.6)
    assert backup_verify(context=CONTEXT, backup=backup) == BackupRecord.Integrity.MISMATCH
    (backups_dir / content).write_bytes(intact)
    assert backup_verify(context=CONTEXT, backup=backup) == BackupRecord.Integrity.OK
    # a list replaced by a plain one of the right format (whoever can write the bucket)
    (backups_dir / (backup.manifest["files"]["list"]["object"] + ".age")).write_bytes(gzip.compress(b'{"format":1}\n'))
    assert backup_verify(context=CONTEXT, backup=backup) == BackupRecord.Integrity.MISMATCH


def test_backups_written_before_sealing_stay_readable_and_restorable(committed_db, settings, backups_dir, media_files):
    # given a backup written plain (before sealing)
    settings.BACKUP_ENCRYPTION = "off"
    media_files(count=2)
    old = backup_create(context=CONTEXT)
    at_backup_time = _data()
    assert gzip.decompress(raw_objects(backups_dir)[old.file_path]).startswith(b"--\n-- PostgreSQL database dump")
    # when sealing is turned on
    settings.BACKUP_ENCRYPTION = "on"
    # then the old backup still verifies and restores
    assert backup_verify(context=CONTEXT, backup=old) == BackupRecord.Integrity.OK
    Paciente.objects.filter(pk__in=Paciente.objects.order_by("pk").values("pk")[:2]).update(nombre="Cambiado")
    backup_restore_in_place(context=CONTEXT, backup_id=old.pk, confirm="test_restore")
    assert _data() == at_backup_time
    # and the next backup stores every content again, sealed, rather than naming the plain objects
    new = backup_create(context=CONTEXT)
    assert new.manifest["encryption"]["format"] == "age-encryption.org/v1" and "encryption" not in old.manifest
    assert new.manifest["files"]["uploaded"] == len(set(new.files.exclude(sha256="").values_list("sha256", flat=True)))
    stored = raw_objects(backups_dir)
    entries = [json.loads(line) for line in gzip.decompress(_plain(new.manifest["files"]["list"]["object"])).splitlines()[1:]]
    sealed_names = [new.file_path + ".age", new.manifest["files"]["list"]["object"] + ".age",
                    *(entry["object"] for entry in entries if entry["sha256"])]
    assert len(sealed_names) > 2 and all(stored[name].startswith(MAGIC) for name in sealed_names)
    assert backup_verify(context=CONTEXT, backup=new) == BackupRecord.Integrity.OK


def test_with_a_remote_storage_and_no_platform_recipient_a_backup_is_refused_naming_the_setting(
    committed_db, settings, supabase_server, tmp_path,
):
    # given Supabase Storage configured, encryption left as it comes (auto), and no platform key
    _supabase(settings, supabase_server)
    settings.BACKUP_ENCRYPTION = "auto"
    settings.BACKUP_PLATFORM_IDENTITY, settings.BACKUP_PLATFORM_IDENTITY_FILE = "", tmp_path / "no-such-file"
    settings.BACKUP_PLATFORM_RECIPIENTS = []
    records = BackupRecord.objects.count()
    # when a backup is asked for, then it is refused before anything is recorded, naming the setting
    with pytest.raises(EncryptionNotConfiguredError) as refused:
        backup_create(context=CONTEXT)
    assert "BACKUP_PLATFORM_RECIPIENTS" in str(refused.value.message) and "BACKUP_ENCRYPTION=off" in str(refused.value.message)
    assert BackupRecord.objects.count() == records and supabase_server.objects == {}
    with pytest.raises(Exception, match="BACKUP_PLATFORM_RECIPIENTS"):
        call_command("create_backup", "--tenant", "test_restore")
    # when encryption is switched off explicitly, then the backup is written plain
    settings.BACKUP_ENCRYPTION = "off"
    backup = backup_create(context=CONTEXT)
    assert gzip.decompress(supabase_server.read("backups", backup.file_path)).startswith(b"--\n-- PostgreSQL")
