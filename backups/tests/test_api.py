import gzip
import hashlib
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse

from backups.models import BackupRecord
from backups.dump.pg_tools import PgConnectionParams, run_psql
from backups.services import pg_binaries
from backups.tests.factories import stored_backup
from bitacora.models import Bitacora
from core.selectors import migration_state
from core.testing import committed_tables, scratch_database

SEED_FIELDS = {"id", "file_name", "file_path", "file_size", "file_size_mb", "backup_type", "created_by", "created_at"}


def _create(client) -> dict:
    response = client.post("/api/backups/create/", {"backup_type": "manual"}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


def test_backup_round_trip_restores_every_row(client_for, clinic_data, backups_dir, tenant_a):
    # given clinic A with committed data, and an admin
    client = client_for("test_a", "admin")
    source = committed_tables("test_a")
    # when a backup is created and downloaded through the API
    created = _create(client)
    response = client.get(f"/api/backups/history/{created['backup']['id']}/download/", {"format": "gz"})
    assert response.status_code == 200
    dump = b"".join(response.streaming_content)
    # then gunzip | psql into an empty database recreates every table, row by row
    assert hashlib.sha256(dump).hexdigest() == response["X-Checksum-SHA256"]
    with scratch_database() as scratch:
        params = PgConnectionParams.from_settings({**connection.settings_dict, "NAME": scratch})
        run_psql(binaries=pg_binaries(), params=params, script=io.BytesIO(gzip.decompress(dump)))
        restored = committed_tables("test_a", dbname=scratch)
    assert restored.keys() == source.keys()
    assert sum(len(rows) for rows in source.values()) > 400
    for table, rows in source.items():
        assert restored[table] == rows, table


def test_create_answers_the_seed_shape_and_stores_a_gzip_sql_dump(client_for, backups_dir, tenant_a):
    client = client_for("test_a", "propietario")
    body = _create(client)
    assert body["success"] is True
    assert body["message"] == "Backup creado exitosamente"
    backup = body["backup"]
    assert {"id", "file_name", "file_size_mb", "created_at"} <= set(backup)
    assert backup["status"] == "completed" and len(backup["sha256"]) == 64
    assert backup["file_name"].startswith("backup_test_a_") and backup["file_name"].endswith(".sql.gz")
    assert backup["file_path"] == f"test_a/manual/{backup['file_name']}"
    assert backup["created_by"]["email"] == "propietario@clinica-a.test"
    assert backup["manifest"]["tenant_schema"] == "test_a"
    assert backup["manifest"]["migrations"] == migration_state()
    stored = (backups_dir / backup["file_path"]).read_bytes()
    assert len(stored) == backup["file_size"]
    assert hashlib.sha256(stored).hexdigest() == backup["sha256"]
    sql = gzip.decompress(stored).decode()
    assert "CREATE TABLE test_a.clinica_paciente" in sql
    assert "ALTER TABLE test_a.clinica_paciente OWNER" not in sql  # --no-owner
    assert "GRANT " not in sql  # --no-privileges
    entry = Bitacora.objects.filter(action="backup.create", target_id=str(backup["id"])).get()
    assert entry.outcome == "ok" and entry.actor_email == "propietario@clinica-a.test"


def test_history_lists_newest_first_with_the_seed_fields(client_for, backups_dir, tenant_a):
    # given an automatic backup (no creator) and then a manual one
    automatic = BackupRecord.objects.create(
        file_name="backup_test_a_2025-11-27_09-00-00.sql.gz", file_path="test_a/automatic/backup_test_a_2025-11-27_09-00-00.sql.gz",
        file_size=2548736, backup_type="automatic", status="completed",
    )
    client = client_for("test_a", "admin")
    manual = _create(client)["backup"]
    # when
    response = client.get(reverse("backups:backup_history"))
    # then
    assert reverse("backups:backup_history") == "/api/backups/history/"
    assert response.status_code == 200
    history = response.json()
    assert isinstance(history, list)
    ids = [item["id"] for item in history]
    assert ids.index(manual["id"]) < ids.index(automatic.pk)
    automatic_json = next(item for item in history if item["id"] == automatic.pk)
    assert SEED_FIELDS <= set(automatic_json)
    assert automatic_json["created_by"] is None
    assert automatic_json["file_size"] == 2548736 and automatic_json["file_size_mb"] == 2.43
    assert automatic_json["backup_type"] == "automatic"
    manual_json = next(item for item in history if item["id"] == manual["id"])
    assert set(manual_json["created_by"]) == {"id", "email", "nombre", "apellido"}
    assert manual_json["created_at"].endswith("Z")


def test_history_filters_and_paginates_only_when_asked(client_for, backups_dir, tenant_a):
    for index in range(3):
        BackupRecord.objects.create(file_name=f"a{index}", file_path=f"test_a/automatic/a{index}", backup_type="automatic", status="completed")
    client = client_for("test_a", "admin")
    response = client.get("/api/backups/history/", {"backup_type": "automatic", "limit": 2})
    body = response.json()
    assert body["count"] >= 3 and len(body["results"]) == 2
    assert {item["backup_type"] for item in body["results"]} == {"automatic"}
    assert client.get("/api/backups/history/", {"status": "failed"}).json() == [
        item for item in client.get("/api/backups/history/").json() if item["status"] == "failed"
    ]
    assert client.get("/api/backups/history/", {"status": "nope"}).status_code == 400


def test_empty_history_is_an_empty_array(client_for, tenant_a):
    BackupRecord.objects.all().delete()
    assert client_for("test_a", "admin").get("/api/backups/history/").json() == []


def test_create_refuses_automatic_through_the_api(client_for, backups_dir):
    response = client_for("test_a", "admin").post("/api/backups/create/", {"backup_type": "automatic"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_download_of_the_stored_gz_streams_with_attachment_headers(client_for, backups_dir, tenant_a):
    client = client_for("test_a", "admin")
    backup = _create(client)["backup"]
    response = client.get(f"/api/backups/history/{backup['id']}/download/", {"format": "gz"})
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/gzip"
    assert response["Content-Disposition"] == f'attachment; filename="{backup["file_name"]}"'
    assert response["Content-Length"] == str(backup["file_size"])
    assert response["X-Checksum-SHA256"] == backup["sha256"]
    assert Bitacora.objects.filter(action="backup.download", target_id=str(backup["id"]), outcome="ok").exists()


def test_download_of_a_missing_object_is_a_clear_404_not_a_500(client_for, backups_dir, tenant_a):
    client = client_for("test_a", "admin")
    backup = _create(client)["backup"]
    (backups_dir / backup["file_path"]).unlink()
    response = client.get(f"/api/backups/history/{backup['id']}/download/")
    assert response.status_code == 404
    assert response.json()["code"] == "backup_file_missing"
    assert Bitacora.objects.filter(action="backup.download", target_id=str(backup["id"]), outcome="error").exists()


def test_download_of_an_unfinished_backup_is_a_409(client_for, tenant_a):
    running = BackupRecord.objects.create(file_name="x", file_path="test_a/manual/x", status="running")
    response = client_for("test_a", "admin").get(f"/api/backups/history/{running.pk}/download/")
    assert response.status_code == 409
    assert response.json()["code"] == "backup_not_completed"


def test_unknown_id_is_a_404(client_for):
    client = client_for("test_a", "admin")
    for response in (
        client.get("/api/backups/history/999999999/download/"),
        client.get("/api/backups/history/999999999/"),
        client.delete("/api/backups/history/999999999/"),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "backup_not_found"


def test_delete_removes_the_object_then_the_record(client_for, backups_dir, tenant_a):
    client = client_for("test_a", "admin")
    backup = _create(client)["backup"]
    response = client.delete(f"/api/backups/history/{backup['id']}/")
    assert response.status_code == 204
    assert not (backups_dir / backup["file_path"]).exists()
    assert not BackupRecord.objects.filter(pk=backup["id"]).exists()
    assert Bitacora.objects.filter(action="backup.delete", target_id=str(backup["id"]), outcome="ok").exists()


def test_delete_of_a_record_whose_object_is_gone_still_deletes_it(client_for, backups_dir, tenant_a):
    client = client_for("test_a", "admin")
    backup = _create(client)["backup"]
    (backups_dir / backup["file_path"]).unlink()
    assert client.delete(f"/api/backups/history/{backup['id']}/").status_code == 204
    assert not BackupRecord.objects.filter(pk=backup["id"]).exists()


@pytest.mark.parametrize("rol", ["odontologo", "recepcion"])
def test_staff_roles_get_403_everywhere(client_for, rol, tenant_a):
    backup = BackupRecord.objects.create(file_name="x", file_path="test_a/manual/x", status="completed")
    client = client_for("test_a", rol)
    assert client.get("/api/backups/history/").status_code == 403
    assert client.post("/api/backups/create/", {}, content_type="application/json").status_code == 403
    assert client.get(f"/api/backups/history/{backup.pk}/download/").status_code == 403
    assert client.delete(f"/api/backups/history/{backup.pk}/").status_code == 403


def test_no_token_is_a_401(client_for):
    assert client_for("test_a").get("/api/backups/history/").status_code == 401


def test_another_clinic_cannot_see_download_or_delete_a_backup(client_for, backups_dir, tenant_a):
    # given a backup of clinic A
    backup = _create(client_for("test_a", "admin"))["backup"]
    # when clinic B's admin tries it (ids are per schema: A's id is unknown in B)
    client_b = client_for("test_b", "admin")
    assert backup["id"] not in [item["id"] for item in client_b.get("/api/backups/history/").json()]
    assert client_b.get(f"/api/backups/history/{backup['id']}/download/").status_code == 404
    assert client_b.delete(f"/api/backups/history/{backup['id']}/").status_code == 404
    # and with A's token on B
    token_a = client_for("test_a", "admin").tokens["access"]
    assert client_for("test_b").get("/api/backups/history/", HTTP_AUTHORIZATION=f"Bearer {token_a}").status_code == 401
    # then A's backup is untouched
    assert BackupRecord.objects.filter(pk=backup["id"]).exists()
    assert (backups_dir / backup["file_path"]).exists()


def test_patch_keep_marks_a_backup_for_admins_and_owners_only(client_for, tenant_a, backups_dir):
    # given a backup
    backup = stored_backup(age=timedelta(days=2))
    url = f"/api/backups/history/{backup.pk}/"
    admin = client_for("test_a", "admin")
    # when an admin marks it keep
    response = admin.patch(url, {"keep": True}, content_type="application/json")
    # then it answers the record, stores the mark and audits it
    assert response.status_code == 200, response.content
    assert response.json()["id"] == backup.pk and response.json()["keep"] is True
    assert BackupRecord.objects.get(pk=backup.pk).keep is True
    entry = Bitacora.objects.get(action="backup.keep", target_id=str(backup.pk))
    assert entry.outcome == "ok" and entry.actor_email == "admin@clinica-a.test" and entry.details["keep"] is True

    # when the owner unmarks it
    response = client_for("test_a", "propietario").patch(url, {"keep": False}, content_type="application/json")
    # then
    assert response.status_code == 200 and response.json()["keep"] is False
    assert BackupRecord.objects.get(pk=backup.pk).keep is False

    # when a staff member tries, then it is forbidden and nothing changes
    response = client_for("test_a", "odontologo").patch(url, {"keep": True}, content_type="application/json")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert BackupRecord.objects.get(pk=backup.pk).keep is False

    # when the id is unknown, then 404
    response = admin.patch("/api/backups/history/999999999/", {"keep": True}, content_type="application/json")
    assert response.status_code == 404 and response.json()["code"] == "backup_not_found"

    # when keep is not a boolean (or missing), then 400 and nothing changes
    for body in ({"keep": "quizás"}, {"keep": "true"}, {"keep": 1}, {"keep": None}, {}):
        response = admin.patch(url, body, content_type="application/json")
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid" and "keep" in response.json()["details"]["fields"]
    assert BackupRecord.objects.get(pk=backup.pk).keep is False
