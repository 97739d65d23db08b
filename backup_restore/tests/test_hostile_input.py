"""Hostile restore files (issue 10): each a clear 4xx naming what is wrong, the clinic byte-identical after."""
from __future__ import annotations

import gzip
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import override_settings

from backup_restore.tests.conftest import export_bytes, section
from bitacora.models import Bitacora
from clinica.tests.factories import clinic_data_create
from core.testing import schema_fingerprint

PLACEHOLDER = "__VALOR_HOSTIL__"


def _gzip_parts(parts) -> bytes:
    """The parts as one gzip member each, concatenated: a gzip file that inflates to their
    concatenation. A part repeated (the same object) is compressed once, so a bomb never
    exists inflated here."""
    members: dict[int, bytes] = {}
    for part in parts:
        if id(part) not in members:
            members[id(part)] = gzip.compress(part, 9)
    return b"".join(members[id(part)] for part in parts)


def _with_raw_value(label: str, field: str, raw: bytes | list[bytes]) -> tuple[list[bytes], int]:
    """The clinic's export with one row's field replaced by raw JSON text (as parts), and that row's pk."""
    document = json.loads(export_bytes())
    s = section(document, label)
    row = s["rows"][0]
    row[s["fields"].index(field)] = PLACEHOLDER
    before, after = json.dumps(document).encode().split(json.dumps(PLACEHOLDER).encode())
    return [before, *(raw if isinstance(raw, list) else [raw]), after], row[s["fields"].index("id")]


def _post(client, data: bytes, name="backup.json.gz", **form):
    upload = SimpleUploadedFile(name, data, content_type="application/octet-stream")
    return client.post("/api/restore/", {"backup_file": upload, "replace": "true", **form})


def _last_restore_entry() -> dict:
    return Bitacora.objects.filter(action="tenant_data.restore").order_by("-id").values("outcome", "details").first()


MIB = 1024 * 1024
VALUES = {
    # case: (model, field, raw JSON text of the value, in parts)
    "nul_in_a_string": ("clinica.paciente", "nombre", b'"Ana\\u0000Mar\\u00eda"'),
    "nul_in_a_json_key": ("clinica.paciente", "alergias", b'{"penicilina\\u0000": 1}'),
    "number_beyond_float_in_a_json_field": ("clinica.tratamiento", "detalles", b'{"sesiones": 1e200000}'),
    "json_field_nested_600_levels": ("clinica.tratamiento", "detalles", b"[" * 600 + b"]" * 600),
    "array_nested_100000_levels": ("clinica.paciente", "alergias", b"[" * 100_000 + b"]" * 100_000),
    "integer_of_5000_digits": ("clinica.tratamiento", "detalles", b"9" * 5000),
    "lone_high_surrogate": ("clinica.paciente", "nombre", b'"a\\ud800b"'),
    "lone_low_surrogate": ("clinica.paciente", "nombre", b'"a\\udc00b"'),
    "high_surrogate_then_not_a_low_one": ("clinica.paciente", "nombre", b'"a\\ud800\\u0041b"'),
    "string_over_postgresqls_limit": ("clinica.cita", "motivo", [b'"', *([b"x" * MIB] * 300), b'"']),
}


@pytest.mark.parametrize("case", list(VALUES))
def test_a_value_postgresql_cannot_store_is_a_400_naming_model_pk_and_field_and_nothing_changes(
    tenant_a, clinic_admin, client_for, case
):
    # given a clinic and its export with one hostile value in a known row
    clinic_data_create(usuario=clinic_admin)
    label, field, raw = VALUES[case]
    parts, pk = _with_raw_value(label, field, raw)
    before = schema_fingerprint("test_a")

    # when it is restored with replace=true
    response = _post(client_for("test_a", "admin"), _gzip_parts(parts))

    # then 400 invalid_value names the model, row, field and reason; every table,
    # constraint and index is as it was; the audit entry records the same code
    assert response.status_code == 400, response.content[:500]
    body = response.json()
    assert body["code"] == "invalid_value"
    assert (body["details"]["model"], body["details"]["pk"], body["details"]["field"]) == (label, pk, field)
    assert body["details"]["reason"]
    assert schema_fingerprint("test_a") == before
    entry = _last_restore_entry()
    assert entry["outcome"] == "error" and entry["details"]["code"] == "invalid_value"


def test_valid_surrogate_pairs_and_escaped_backslashes_are_restored_as_written(tenant_a, clinic_admin, client_for):
    # given an export whose patient name holds an escaped pair and text that only looks like an escape
    from clinica.models import Paciente

    clinic_data_create(usuario=clinic_admin)
    parts, pk = _with_raw_value("clinica.paciente", "nombre", b'"\\ud83d\\ude00 \\\\ud800 \\\\\\ud83d\\ude01"')

    # when it is restored
    response = _post(client_for("test_a", "admin"), _gzip_parts(parts))

    # then the emoji and the literal backslashes are stored exactly
    assert response.status_code == 200, response.content[:500]
    assert Paciente.objects.get(pk=pk).nombre == "\U0001F600 \\ud800 \\\U0001F601"


BOMBS = {
    # the three uploads, and where each is refused
    "a_300_mib_string": (lambda before, after: [before, b'"', *([b"x" * MIB] * 300), b'"', after],
                         400, "invalid_value", "max_value_bytes"),
    "a_1_gib_string": (lambda before, after: [before, b'"', *([b"y" * MIB] * 1024), b'"', after],
                       400, "invalid_value", "max_value_bytes"),
    "a_gib_of_whitespace": (lambda before, after: [before, b'""', *([b" " * MIB] * 1024), after],
                            400, "invalid_value", "max_value_bytes"),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_a_compression_bomb_is_refused_early_with_the_limit_in_details(tenant_a, clinic_admin, client_for, case):
    # given a small .json.gz that inflates to hundreds of MiB or more
    clinic_data_create(usuario=clinic_admin)
    make, status, code, limit = BOMBS[case]
    (before_text, after_text), _pk = _with_raw_value("clinica.cita", "motivo", [])
    bomb = _gzip_parts(make(before_text, after_text))
    assert len(bomb) < 2 * MIB
    before = schema_fingerprint("test_a")

    # when it is uploaded
    response = _post(client_for("test_a", "admin"), bomb)

    # then it is refused with the limit, and nothing changed
    assert response.status_code == status, response.content[:500]
    assert response.json()["code"] == code
    assert response.json()["details"][limit] == 8 * MIB
    assert schema_fingerprint("test_a") == before


def test_an_upload_that_inflates_past_the_limit_gets_413_with_the_limit(tenant_a, clinic_admin, client_for):
    # given a valid export, and an inflated-size limit below its size
    clinic_data_create(usuario=clinic_admin)
    file = export_bytes()
    before = schema_fingerprint("test_a")

    # when it is uploaded gzipped
    with override_settings(RESTORE_MAX_INFLATED_BYTES=len(file) // 2):
        response = _post(client_for("test_a", "admin"), _gzip_parts([file]))

    # then 413, the limit in details, and nothing changed
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    assert response.json()["details"] == {"max_inflated_bytes": len(file) // 2}
    assert schema_fingerprint("test_a") == before


def test_a_row_with_more_values_than_fields_is_refused_before_it_is_all_read(tenant_a, clinic_admin, client_for):
    # given a file whose first pago row goes on for millions of values
    clinic_data_create(usuario=clinic_admin)
    parts, pk = _with_raw_value("clinica.pago", "monto", [b"1", *([b", 0.5" * 100_000] * 40)])
    before = schema_fingerprint("test_a")

    # when it is restored
    response = _post(client_for("test_a", "admin"), _gzip_parts(parts))

    # then the row is refused, named
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_row"
    assert (response.json()["details"]["model"], response.json()["details"]["pk"]) == ("clinica.pago", pk)
    assert schema_fingerprint("test_a") == before


def test_a_file_declaring_rows_it_does_not_hold_is_refused_and_the_clinic_keeps_its_rows(tenant_a, clinic_admin, client_for):
    # given the file: a header declaring the clinic's rows, and an empty `data`
    clinic_data_create(usuario=clinic_admin)
    document = json.loads(export_bytes())
    document["data"] = []
    before = schema_fingerprint("test_a")

    # when it is restored with replace=true
    response = _post(client_for("test_a", "admin"), json.dumps(document).encode(), name="backup.json")

    # then 400 count_mismatch names a model and both counts; nothing was deleted
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "count_mismatch"
    assert body["details"]["read"] == 0 and body["details"]["declared"] > 0
    assert schema_fingerprint("test_a") == before


def test_refused_rows_stay_out_of_the_servers_log(tenant_a, clinic_admin, client_for):
    # given a file whose patients repeat a document number only this test uses
    from clinica.models import Paciente

    clinic_data_create(usuario=clinic_admin)
    marker = f"DOC-SECRETO-{connection.connection.get_backend_pid()}"
    document = json.loads(export_bytes())
    s = section(document, "clinica.paciente")
    i = s["fields"].index("documento")
    s["rows"][0][i] = s["rows"][1][i] = marker
    log = _server_log()
    start = log.stat().st_size if log else 0
    seen = {}

    def progress(label, done, total):  # runs inside the restore's transaction
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('log_error_verbosity'), current_setting('log_min_error_statement')")
            seen["settings"] = cursor.fetchone()

    # when it is restored and refused (PostgreSQL raises a unique violation whose DETAIL quotes the key)
    from backup_restore import errors, utils

    with pytest.raises(errors.UniqueViolationError):
        utils.tenant_data_import(source=__import__("io").BytesIO(json.dumps(document).encode()),
                                 schema_name="test_a", replace=True, progress=progress)

    # then the restore's transaction told PostgreSQL to log neither DETAIL nor the statement,
    # and (where this test can read the server's log) the document number is not in it
    assert seen["settings"] == ("terse", "panic")
    assert not Paciente.objects.filter(documento=marker).exists()
    if log is not None:
        with open(log, "rb") as handle:
            handle.seek(start)
            assert marker.encode() not in handle.read()


def _server_log():
    """The PostgreSQL server's log file, when this process can read it (a local Debian server, or the collector's)."""
    from pathlib import Path

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_logfile(), current_setting('data_directory', true), "
                       "current_setting('server_version_num')::int / 10000")
        current, data_directory, major = cursor.fetchone()
    candidates = [Path(data_directory or "") / current] if current else []
    candidates.append(Path(f"/var/log/postgresql/postgresql-{major}-main.log"))
    return next((path for path in candidates if path.is_file() and path.stat().st_size and _readable(path)), None)


def _readable(path) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def _wait_until(condition, seconds: float = 20) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def committed_clinic_export(committed_db, client_for):
    """The committed clinic's schema, its export, its fingerprint, and its admin's client."""
    schema = committed_db.schema_name
    return schema, export_bytes(schema), schema_fingerprint(schema), client_for(schema, "admin")


@pytest.mark.committed
def test_a_deadlock_with_a_reader_answers_a_retryable_409_and_changes_nothing(committed_clinic_export):
    import threading

    from core.testing import backend_waiting, other_session

    # given the clinic's export, and a reader that holds one of its tables in an open transaction
    schema, file, before, client = committed_clinic_export
    connection.ensure_connection()
    restore_pid = connection.connection.get_backend_pid()
    outcome = {}

    def reader():
        # … which, once the restore waits for that table, reads a table the restore already holds: a deadlock
        with other_session() as session, other_session() as observer:
            with session.cursor() as cursor:
                cursor.execute("SET deadlock_timeout = '60s'")  # the restore's session finds the cycle, not this one
                cursor.execute(f'SELECT 1 FROM "{schema}"."clinica_pago" LIMIT 1')
                outcome["reader_ready"] = True
                _wait_until(lambda: backend_waiting(observer, restore_pid))
                with observer.cursor() as look:
                    look.execute(
                        "SELECT relation::regclass::text FROM pg_locks WHERE pid = %s AND granted "
                        "AND mode = 'AccessExclusiveLock' AND relation IS NOT NULL "
                        "AND relation::regclass::text LIKE %s LIMIT 1",
                        [restore_pid, f"{schema}.clinica%"],
                    )
                    (held,) = look.fetchone()
                cursor.execute(f"SELECT 1 FROM {held} LIMIT 1")  # waits for the restore: the cycle closes
            session.rollback()

    thread = threading.Thread(target=reader)
    thread.start()
    _wait_until(lambda: outcome.get("reader_ready"))

    # when the restore runs into it (its session looks for a deadlock 2 s into a wait: the reader is waiting by then)
    with connection.cursor() as cursor:
        cursor.execute("SET deadlock_timeout = '2s'")
    try:
        response = client.post("/api/restore/", {"backup_file": SimpleUploadedFile("b.json", file), "replace": "true"})
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET deadlock_timeout")
    thread.join(30)

    # then 409 restore_tables_busy (PostgreSQL broke the deadlock on the restore's side), nothing changed
    assert response.status_code == 409, response.content[:500]
    assert response.json()["code"] == "restore_tables_busy"
    assert schema_fingerprint(schema) == before


@pytest.mark.committed
def test_tables_busy_past_the_lock_timeout_answer_a_retryable_409_and_change_nothing(committed_clinic_export):
    import threading

    from core.testing import other_session

    # given a long transaction holding one of the clinic's tables
    schema, file, before, client = committed_clinic_export
    with other_session() as session:
        with session.cursor() as cursor:
            cursor.execute(f'SELECT 1 FROM "{schema}"."clinica_cita" LIMIT 1')
        # (should the restore wait past its timeout, the reader gives way so the test fails instead of hanging)
        give_way = threading.Timer(15, session.rollback)
        give_way.start()

        # when a restore is attempted with a short lock timeout
        with override_settings(BACKUP_RESTORE_LOCK_TIMEOUT="200ms"):
            response = client.post("/api/restore/", {"backup_file": SimpleUploadedFile("b.json", file), "replace": "true"})
        give_way.cancel()

    # then 409 at once, the timeout in details, and nothing changed
    assert response.status_code == 409, response.content[:500]
    assert response.json()["code"] == "restore_tables_busy"
    assert response.json()["details"] == {"lock_timeout": "200ms"}
    assert schema_fingerprint(schema) == before


# -- patient file names (issue 18): every FileField value must lie under the restored clinic's prefix

HOSTILE_NAMES = {
    # case: (the value of clinica.radiografia.archivo in the file, the refusal's code)
    "another_clinics_file": ("test_b/radiografias/rx_0.png", "outside_clinic"),
    "a_clinic_that_may_not_exist_yet": ("clinica_norte/radiografias/rx.png", "outside_clinic"),
    "a_look_alike_prefix_in_cyrillic": ("test_\u0430/radiografias/rx.png", "outside_clinic"),
    "a_prefix_that_only_starts_like_it": ("test_ab/radiografias/rx.png", "outside_clinic"),
    "no_prefix": ("radiografias/rx.png", "outside_clinic"),
    "out_of_the_prefix_by_dot_dot": ("test_a/radiografias/../../test_b/radiografias/rx_0.png", "traversal"),
    "out_of_the_media_root": ("../../../etc/passwd", "traversal"),
    "an_absolute_path": ("/etc/passwd", "absolute"),
    "an_absolute_path_under_the_prefix": ("/test_a/radiografias/rx.png", "absolute"),
    "a_drive_letter": ("C:/test_a/radiografias/rx.png", "absolute"),
    "backslashes": ("test_a\\..\\test_b\\radiografias\\rx_0.png", "backslash"),
    "nul": ("test_a/radiografias/rx\x00.png", "control_character"),
    "a_lone_surrogate": ("test_a/radiografias/rx\ud800.png", "control_character"),
    "a_new_line": ("test_a/radiografias/rx.png\nINFO restore ok", "control_character"),
    "a_line_separator": ("test_a/radiografias/rx\u2028.png", "control_character"),
    "longer_than_the_column": ("test_a/radiografias/" + "r" * 100 + ".png", "too_long"),
    "a_number": (12345, "not_text"),
    "a_decimal": (1.5, "not_text"),
    "a_boolean": (True, "not_text"),
    "a_list": (["test_a/radiografias/rx.png"], "not_text"),
    "an_object": ({"name": "test_a/radiografias/rx.png"}, "not_text"),
}


def _with_file_name(name) -> tuple[bytes, int]:
    """The clinic's export with its radiograph's file name replaced (JSON escapes NUL and the rest)."""
    document = json.loads(export_bytes())
    s = section(document, "clinica.radiografia")
    row = s["rows"][0]
    row[s["fields"].index("archivo")] = name
    return json.dumps(document).encode(), row[s["fields"].index("id")]


@pytest.mark.parametrize("replace", ["true", "false"])
@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_a_file_name_outside_the_clinics_prefix_is_a_400_naming_the_row_and_nothing_changes(
    tenant_a, clinic_admin, client_for, caplog, case, replace
):
    # given a clinic and its export whose radiograph names a file the clinic may not name
    clinic_data_create(usuario=clinic_admin)
    name, refusal = HOSTILE_NAMES[case]
    file, pk = _with_file_name(name)
    before = schema_fingerprint("test_a")
    caplog.set_level("DEBUG")

    # when it is restored, by COPY straight into the emptied table (replace) or through the staging table
    response = _post(client_for("test_a", "admin"), file, name="backup.json", replace=replace)

    # then 400 invalid_value names the model, row and field, with the refusal's code; every table,
    # constraint and index is as it was
    assert response.status_code == 400, response.content[:500]
    body = response.json()
    assert body["code"] == "invalid_value"
    details = body["details"]
    assert (details["model"], details["pk"], details["field"], details["name_refusal"]) == (
        "clinica.radiografia", pk, "archivo", refusal)
    assert details["reason"]
    assert schema_fingerprint("test_a") == before
    # and the name reaches neither the logs nor the audit entry (nor the answer)
    entry = _last_restore_entry()
    assert entry["outcome"] == "error" and entry["details"]["code"] == "invalid_value"
    if isinstance(name, str):
        for text in (caplog.text, json.dumps(entry, ensure_ascii=False), response.content.decode()):
            assert name not in text and name.split("/")[-1] not in text


def test_names_under_the_clinics_prefix_are_restored_as_written_however_spelled(tenant_a, clinic_admin, client_for):
    # given radiographs named under the clinic's prefix, spelled oddly, and one named for another clinic
    from clinica.models import Radiografia
    from clinica.tests.factories import RadiografiaFactory

    data = clinic_data_create(usuario=clinic_admin)
    allowed = {
        # a literal name: nothing on the way decodes it (the Supabase backend quotes a "%")
        "percent_escapes": "test_a/radiografias/%2e%2e/%2f..%5crx.png",
        "unicode": "test_a/radiografias/niño ñandú 😀 (copia).png",
        "dots_inside_a_part": "test_a/radiografias/...rx..png",
        "as_long_as_the_column": "test_a/radiografias/" + "r" * 80,
    }
    rows = {case: RadiografiaFactory(paciente=data["paciente"], archivo=name).pk for case, name in allowed.items()}
    intruder = RadiografiaFactory(paciente=data["paciente"], archivo="test_b/radiografias/rx_0.png").pk
    file = export_bytes()
    client = client_for("test_a", "admin")

    # when the file is restored, then the other clinic's name refuses it
    refused = _post(client, file, name="backup.json")
    assert refused.status_code == 400, refused.content[:500]
    assert (refused.json()["details"]["pk"], refused.json()["details"]["name_refusal"]) == (intruder, "outside_clinic")

    # and once that row is gone, every other name is restored exactly as written
    Radiografia.objects.filter(pk=intruder).delete()
    restored = _post(client, export_bytes(), name="backup.json")
    assert restored.status_code == 200, restored.content[:500]
    assert {case: Radiografia.objects.get(pk=pk).archivo.name for case, pk in rows.items()} == allowed
