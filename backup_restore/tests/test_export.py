import gzip
import json

from backup_restore import utils
from backup_restore.tests.conftest import export_bytes, section
from clinica.tests.factories import clinic_data_create
from core.selectors import migration_state


def test_export_writes_the_header_then_every_exported_model_in_order(tenant_a, clinic_admin):
    # given a clinic with data
    clinic_data_create(usuario=clinic_admin)

    # when it is exported
    document = json.loads(export_bytes())

    # then the header describes the file, and rows match the header's counts
    assert document["format"] == utils.FORMAT_NAME
    assert document["version"] == utils.FORMAT_VERSION
    assert document["tenant"]["schema"] == "test_a"
    assert document["migrations"] == migration_state()
    labels = [s["model"] for s in document["data"]]
    assert labels.index("clinica.paciente") < labels.index("clinica.cita")
    for s in document["data"]:
        assert len(s["rows"]) == document["models"][s["model"]]["count"]
    assert "sessions.session" in document["excluded"]
    assert "sessions.session" not in labels


def test_export_never_contains_a_password_hash(tenant_a, clinic_admin):
    # given users with (MD5, in tests) password hashes
    clinic_data_create(usuario=clinic_admin)
    hashes = [h.encode() for h in clinic_admin.__class__.objects.values_list("password", flat=True)]

    # when exported, plain and gzipped
    data = export_bytes()
    compressed = gzip.decompress(b"".join(utils.gzip_chunks(iter([data]))))

    # then no hash, nor a password column, appears anywhere
    assert hashes
    for blob in (data, compressed):
        assert not any(h in blob for h in hashes)
        assert b"md5$" not in blob and b"pbkdf2" not in blob
    users = section(json.loads(data), "usuarios.usuario")
    assert "password" not in users["fields"] and users["rows"]
