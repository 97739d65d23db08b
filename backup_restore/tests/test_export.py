import gzip
import json
import random
import threading
import zlib

from backup_restore import utils
from backup_restore.tests.conftest import export_bytes, section
from clinica.tests.factories import clinic_data_create
from core.parallel_gzip import THREAD_NAME_PREFIX
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


def test_the_gzipped_export_is_one_gzip_member_of_the_same_bytes_whatever_the_threads(settings):
    # given an export's chunks, several compression blocks long
    chunks = [json.dumps({"rows": [[i, f"Paciente {i}", i * 7] for i in range(n, n + 20_000)]}).encode()
              for n in range(0, 200_000, 20_000)]
    outputs = []
    for workers in (1, 2):
        settings.BACKUP_COMPRESS_WORKERS = workers
        # when gzipped as the export streams it
        outputs.append(b"".join(utils.gzip_chunks(iter(chunks))))
    # then it is one gzip member (what an HTTP client decodes), the same bytes with one thread or two
    decoder = zlib.decompressobj(31)
    assert decoder.decompress(outputs[0]) == b"".join(chunks)
    assert decoder.eof and decoder.unused_data == b""
    assert len(outputs[0]) > 0 and outputs[0] == outputs[1]


def test_a_gzipped_export_abandoned_mid_way_stops_its_threads_and_closes_its_source(settings):
    # given a gzipped export on two threads, of a source that says when it is closed
    settings.BACKUP_COMPRESS_WORKERS = 2
    closed = []

    def source():
        try:
            for n in range(1000):
                yield bytes(random.Random(n).randbytes(256 * 1024))
        finally:
            closed.append(True)

    rows = source()
    compressed = utils.gzip_chunks(rows)
    # when the client goes away after the first pieces
    for _ in zip(range(5), compressed):
        pass
    compressed.close()
    # then no compression thread is left, and the source (the snapshot's cursor) was closed
    assert [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)] == []
    assert closed == [True]
