import gzip
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from backup_restore.tests.conftest import export_bytes, file_edit, restorable_snapshot
from bitacora.models import Bitacora
from clinica.models import Pago
from clinica.tests.factories import clinic_data_create
from core.testing import operation_lock_held_elsewhere


def _entries(action: str):
    return list(Bitacora.objects.filter(action=action).order_by("-id").values("outcome", "actor_email", "details")[:1])


def _upload(data: bytes, name="backup.json"):
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def test_admin_downloads_a_streamed_json_file_and_the_export_is_audited(tenant_a, clinic_admin, client_for):
    # given a clinic with data
    clinic_data_create(usuario=clinic_admin)
    last = Bitacora.objects.order_by("-id").values_list("id", flat=True).first() or 0

    # when its admin asks for the backup
    response = client_for("test_a", "admin").get("/api/backup/")
    body = b"".join(response.streaming_content)

    # then a JSON attachment named after the clinic arrives, and the audit log says so
    assert response.status_code == 200
    assert re.fullmatch(r'attachment; filename="backup_test_a_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.json"',
                        response["Content-Disposition"])
    document = json.loads(body)
    assert document["tenant"] == {"schema": "test_a", "name": "Clínica A"}
    entry = Bitacora.objects.filter(action="tenant_data.export", id__gt=last).get()
    assert entry.outcome == "ok" and entry.actor_email == "admin@clinica-a.test"


def test_export_can_be_gzipped(tenant_a, client_for):
    # when the owner asks for a compressed backup
    response = client_for("test_a", "propietario").get("/api/backup/?compress=gzip")

    # then a .json.gz arrives
    assert response.status_code == 200
    assert response["Content-Disposition"].endswith('.json.gz"')
    assert json.loads(gzip.decompress(b"".join(response.streaming_content)))["version"] == 1


@pytest.mark.parametrize("rol", ["odontologo", "recepcion"])
def test_staff_gets_403_on_both_endpoints(tenant_a, client_for, rol):
    client = client_for("test_a", rol)
    assert client.get("/api/backup/").status_code == 403
    response = client.post("/api/restore/", {"backup_file": _upload(b"{}")})
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_no_token_gets_401(tenant_a, client_for):
    client = client_for("test_a")
    assert client.get("/api/backup/").status_code == 401
    assert client.post("/api/restore/", {"backup_file": _upload(b"{}")}).status_code == 401


def test_tenant_b_cannot_restore_into_tenant_a(tenant_a, clinic_admin, client_for):
    # given a file of clinic B, and clinic A's data
    clinic_data_create(usuario=clinic_admin)
    before = restorable_snapshot()
    file_b = export_bytes("test_b")

    # when B's admin token is used against A, or A's admin uploads B's file
    token_b = client_for("test_b", "admin").defaults["HTTP_AUTHORIZATION"]
    client = client_for("test_a")
    client.defaults["HTTP_AUTHORIZATION"] = token_b
    cross_token = client.post("/api/restore/", {"backup_file": _upload(file_b), "replace": "true"})
    cross_file = client_for("test_a", "admin").post("/api/restore/", {"backup_file": _upload(file_b), "replace": "true"})

    # then both are refused and A is unchanged
    assert cross_token.status_code == 401
    assert cross_file.status_code == 400
    assert cross_file.json()["code"] == "other_tenant"
    assert restorable_snapshot() == before


def test_restore_answers_a_summary_per_model_and_is_audited(tenant_a, clinic_admin, client_for):
    # given an export, then lost payments
    clinic_data_create(usuario=clinic_admin)
    file = export_bytes()
    pagos = Pago.objects.count()
    Pago.objects.all().delete()

    # when the admin restores it with replace=true
    response = client_for("test_a", "admin").post(
        "/api/restore/", {"backup_file": _upload(gzip.compress(file), "b.json.gz"), "replace": "true"}
    )

    # then the payments are back and the answer summarizes each model
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True and body["replace"] is True and body["dry_run"] is False
    assert body["models"]["clinica.pago"] == {"created": pagos, "updated": 0, "deleted": 0}
    assert "usuarios.usuario" in body["skipped_models"]
    assert isinstance(body["duration_ms"], int)
    assert Pago.objects.count() == pagos
    assert _entries("tenant_data.restore")[0]["outcome"] == "ok"


def test_a_failed_restore_answers_400_with_model_pk_and_reason_and_its_audit_entry_survives(tenant_a, clinic_admin, client_for):
    # given a file with a dangling foreign key
    clinic_data_create(usuario=clinic_admin)
    before = restorable_snapshot()

    def dangle(document):
        s = next(s for s in document["data"] if s["model"] == "clinica.cita")
        s["rows"][0][s["fields"].index("paciente_id")] = 987654321

    bad = file_edit(export_bytes(), dangle)

    # when it is restored
    response = client_for("test_a", "admin").post("/api/restore/", {"backup_file": _upload(bad), "replace": "true"})

    # then 400 names the row, nothing changed, and the audit entry (committed apart) is there
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["code"] == "dangling_foreign_key"
    assert body["details"]["model"] == "clinica.cita" and body["details"]["pk"] is not None
    assert restorable_snapshot() == before
    entry = _entries("tenant_data.restore")[0]
    assert entry["outcome"] == "error" and entry["details"]["code"] == "dangling_foreign_key"


def test_a_refused_restores_reason_follows_accept_language(tenant_a, client_for):
    # given a file with one row longer than its section's fields
    def long_row(document):
        s = next(s for s in document["data"] if s["model"] == "clinica.tratamiento")
        s["rows"] = [[*range(len(s["fields"])), "extra"]]

    bad = file_edit(export_bytes(), long_row)
    n = len(next(s for s in json.loads(bad)["data"] if s["model"] == "clinica.tratamiento")["fields"])
    client = client_for("test_a", "admin")

    # when it is restored asking for English, then with no preference
    english = client.post("/api/restore/", {"backup_file": _upload(bad)}, HTTP_ACCEPT_LANGUAGE="en")
    spanish = client.post("/api/restore/", {"backup_file": _upload(bad)})

    # then the reason is in the language of the message, the counts filled in
    assert english.status_code == 400 and english.json()["code"] == "invalid_row"
    assert english.json()["message"] == "A row in the file is not valid."
    assert english.json()["details"]["reason"] == f"The row has {n + 1} values; {n} were expected."
    assert spanish.status_code == 400
    assert spanish.json()["details"]["reason"] == f"La fila tiene {n + 1} valores; se esperaban {n}."


def test_an_oversized_upload_gets_413(tenant_a, client_for):
    with override_settings(RESTORE_MAX_UPLOAD_BYTES=10):
        response = client_for("test_a", "admin").post("/api/restore/", {"backup_file": _upload(b"x" * 100)})
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    assert _entries("tenant_data.restore")[0]["outcome"] == "error"


def test_only_an_admin_may_restore_another_clinics_file(tenant_a, client_for):
    file = file_edit(export_bytes(), lambda d: d["tenant"].update(schema="test_b"))
    owner = client_for("test_a", "propietario").post(
        "/api/restore/", {"backup_file": _upload(file), "allow_other_tenant": "true", "dry_run": "true"})
    admin = client_for("test_a", "admin").post(
        "/api/restore/", {"backup_file": _upload(file), "allow_other_tenant": "true", "dry_run": "true"})
    assert owner.status_code == 403 and owner.json()["code"] == "other_tenant_not_allowed"
    assert admin.status_code == 200 and admin.json()["dry_run"] is True


def test_a_second_operation_on_the_same_clinic_gets_409(tenant_a, client_for):
    # given another session holding the clinic's operation lock
    with operation_lock_held_elsewhere("test_a"):
        client = client_for("test_a", "admin")

        # when an export and a restore are attempted
        export = client.get("/api/backup/")
        restore = client.post("/api/restore/", {"backup_file": _upload(export_bytes())})

    # then both get 409
    assert export.status_code == 409 and export.json()["code"] == "backup_in_progress"
    assert restore.status_code == 409
