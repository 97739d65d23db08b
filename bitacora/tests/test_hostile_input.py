"""A hostile restore file cannot make the error body or the append-only audit log huge."""
import json

from django.core.files.uploadedfile import SimpleUploadedFile

from bitacora.models import Bitacora

HUGE_LABEL = "clinica." + "x" * (1024 * 1024)


def test_a_1_mb_model_label_in_a_restore_file_is_echoed_and_audited_bounded(client_for, tenant_a):
    # given a real export of the clinic that declares a 1 MB fake model label
    client = client_for("test_a", "admin")
    document = json.loads(b"".join(client.get("/api/backup/").streaming_content))
    document["models"][HUGE_LABEL] = {"count": 0, "restore": True}
    upload = SimpleUploadedFile("backup.json", json.dumps(document).encode(), content_type="application/json")
    last = Bitacora.objects.order_by("-id").values_list("id", flat=True).first() or 0

    # when it is uploaded for restore
    response = client.post("/api/restore/", {"backup_file": upload})

    # then the 400 names the label, cut, in a small body
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unknown_model" and body["details"]["truncated"] is True
    assert body["details"]["model"].startswith("clinica.xxx") and body["details"]["model"].endswith("…[+1048084]")
    assert len(response.content) < 2048
    # and the audit entry keeps the same bounded excerpt
    entry = Bitacora.objects.filter(action="tenant_data.restore", outcome="error", id__gt=last).get()
    assert entry.details["error"]["model"] == body["details"]["model"]
    assert len(json.dumps(entry.details)) < 2048
