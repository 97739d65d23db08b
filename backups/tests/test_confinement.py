"""A clinic's backups and restores read and write patient files only under its own folder.

The audit's attack: a clinic's row names another clinic's file (through a JSON restore
before it was refused, or any other way), then a backup of the clinic reads that file
into the clinic's own backup, and a restore of it writes it back into the other
clinic's folder. Every name a row holds goes through core.media_names first.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import uuid

import pytest
from django.db import connection

from backups.files.media import file_object_key
from backups.models import BackupFile, BackupRecord, RestoreJob
from backups.restore import backup_restore_as_new_tenant, backup_restore_in_place
from backups.services import backup_create
from bitacora.models import Bitacora
from bitacora.services import AuditContext
from clinica.models import Radiografia
from core.models import Tenant
from core.schemas import schema_drop

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-confinamiento")
SECRET = b"radiografia de otra clinica " + os.urandom(64)


@pytest.fixture
def other_clinics_file(media_dir):
    """A file of another clinic (test_b) in the media folder every clinic shares."""
    path = media_dir / "test_b" / "radiografias" / f"secreta_{uuid.uuid4().hex[:8]}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def hostile_row(media_files):
    """One of the clinic's radiographs, its name set afterwards by the test (as a restore could)."""
    radiografia = media_files(count=1)[0]
    yield radiografia
    Radiografia.objects.filter(pk=radiografia.pk).delete()


@pytest.fixture(autouse=True)
def _short_roots():
    """The short media roots the `absolute` case links to its folder, removed afterwards."""
    made: list[str] = []
    yield made
    for root in made:
        os.unlink(root)


def _name(kind: str, media_dir, other, settings=None, short_roots=None) -> str:
    relative = str(other.relative_to(media_dir))
    mine = media_dir / "test_restore" / "radiografias"
    mine.mkdir(parents=True, exist_ok=True)
    if kind == "other_clinic":
        return relative
    if kind == "traversal":
        return f"test_restore/radiografias/../../{relative}"
    if kind == "absolute":
        # Under the media root, as in the audit, by a root short enough for the column.
        short_root = f"/tmp/m{uuid.uuid4().hex[:6]}"
        os.symlink(media_dir, short_root)
        short_roots.append(short_root)
        settings.MEDIA_ROOT = short_root
        return f"{short_root}/{relative}"
    if kind == "outside_media_root":
        return "../../../etc/passwd"
    if kind == "directory":
        return "test_restore/radiografias"
    if kind == "link":
        link = mine / f"enlace_{uuid.uuid4().hex[:6]}.png"
        link.symlink_to(other)
        return str(link.relative_to(media_dir))
    if kind == "linked_folder":
        folder = media_dir / "test_restore" / f"carpeta_{uuid.uuid4().hex[:6]}"
        folder.symlink_to(other.parent, target_is_directory=True)
        return f"{folder.relative_to(media_dir)}/{other.name}"
    if kind == "fifo":
        fifo = mine / f"fifo_{uuid.uuid4().hex[:6]}.png"
        os.mkfifo(fifo)
        return str(fifo.relative_to(media_dir))
    raise AssertionError(kind)


REASONS = {"other_clinic": "outside_clinic", "traversal": "traversal", "absolute": "absolute",
           "outside_media_root": "traversal", "directory": "not_a_file", "link": "link", "linked_folder": "link",
           "fifo": "not_a_file"}


@pytest.mark.parametrize("kind", list(REASONS))
def test_a_backup_reads_no_file_outside_its_clinic_and_completes_with_a_warning(
    committed_db, backups_dir, media_dir, hostile_row, other_clinics_file, client_for, settings, _short_roots, kind
):
    # given a radiograph whose name leads out of the clinic's folder, beside good ones
    name = _name(kind, media_dir, other_clinics_file, settings, _short_roots)
    Radiografia.objects.filter(pk=hostile_row.pk).update(archivo=name)
    good = Radiografia.objects.exclude(pk=hostile_row.pk).exclude(archivo="").count()
    # when the clinic's admin makes a backup through the API
    response = client_for("test_restore", "admin").post("/api/backups/create/", {}, content_type="application/json")
    # then it completes, holds every good file and nothing of the other clinic's, and says what it refused
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["message"].startswith("Backup creado con advertencias")
    backup = BackupRecord.objects.get(pk=body["backup"]["id"])
    refused = next(item for item in backup.warnings if item["code"] == "files_refused")
    assert refused["count"] == 1 and refused["reasons"] == {REASONS[kind]: 1}
    assert refused["rows"] == [{"model": "clinica.radiografia", "pk": hostile_row.pk, "field": "archivo"}]
    assert body["backup"]["warning"] and name not in response.content.decode()
    assert backup.files_count == good
    assert not BackupFile.objects.filter(backup=backup, path=name).exists()
    secret_sha = hashlib.sha256(SECRET).hexdigest()
    assert not (backups_dir / file_object_key("test_restore", secret_sha)).exists()
    archive = client_for("test_restore", "admin").get(f"/api/backups/history/{backup.pk}/files/")
    with tarfile.open(fileobj=io.BytesIO(b"".join(archive.streaming_content))) as tar:
        assert all(tar.extractfile(member).read() != SECRET for member in tar.getmembers())
    audit = Bitacora.objects.filter(target_id=str(backup.pk), details__code="file_refused").get()
    assert name not in str(audit.details)


def _old_backup_naming(name: str, media_dir, other) -> BackupRecord:
    """A backup made before names were checked: its rows and its file list name another clinic's file,
    whose content it stored as the clinic's own."""
    backup = backup_create(context=CONTEXT)
    sha256 = hashlib.sha256(SECRET).hexdigest()
    stored = media_dir.parent / "backups" / file_object_key("test_restore", sha256)
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(SECRET)
    BackupFile.objects.create(backup=backup, path=name, sha256=sha256, size=len(SECRET))
    return backup


@pytest.mark.parametrize("kind", ["other_clinic", "traversal", "absolute"])
def test_a_restore_writes_no_file_into_another_clinics_folder(
    committed_db, backups_dir, media_dir, hostile_row, other_clinics_file, settings, _short_roots, kind
):
    # given an old backup whose row names the other clinic's file, which that clinic then deleted
    name = _name(kind, media_dir, other_clinics_file, settings, _short_roots)
    Radiografia.objects.filter(pk=hostile_row.pk).update(archivo=name)
    backup = _old_backup_naming(name, media_dir, other_clinics_file)
    other_clinics_file.unlink()
    job = RestoreJob.objects.create(backup=backup, backup_file_name=backup.file_name, status=RestoreJob.Status.RUNNING)
    # when the clinic is restored from it
    backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore", job=job)
    # then the other clinic's folder did not get its file back, and the restore says what it refused
    assert not other_clinics_file.exists()
    job.refresh_from_db()
    refused = next(item for item in job.warnings if item["code"] == "files_refused")
    assert refused["count"] == 1 and refused["rows"] == [{"model": "clinica.radiografia", "pk": hostile_row.pk,
                                                           "field": "archivo"}]
    RestoreJob.objects.filter(pk=job.pk).delete()


def test_a_restore_into_a_new_clinic_moves_no_outside_name_into_its_folder(
    committed_db, backups_dir, media_dir, hostile_row, other_clinics_file
):
    # given an old backup whose row names the other clinic's file
    name = _name("other_clinic", media_dir, other_clinics_file)
    Radiografia.objects.filter(pk=hostile_row.pk).update(archivo=name)
    backup = _old_backup_naming(name, media_dir, other_clinics_file)
    new_schema = f"test_restore_conf_{uuid.uuid4().hex[:6]}"
    try:
        # when it is restored as a new clinic
        backup_restore_as_new_tenant(context=CONTEXT, backup_id=backup.pk, schema_name=new_schema, nombre="Copia")
        # then the other clinic's content was not copied into the new clinic's folder
        copied = [path for path in (media_dir / new_schema).rglob("*") if path.is_file() and path.read_bytes() == SECRET]
        assert copied == []
    finally:
        connection.set_schema_to_public()
        Tenant.objects.filter(schema_name=new_schema).delete()
        schema_drop(new_schema)
        connection.set_tenant(Tenant.objects.get(schema_name="test_restore"))
