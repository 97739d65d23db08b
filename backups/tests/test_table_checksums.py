"""Each table's rows counted and hashed while a dump is written (backups.dump.tables): the
same digests whatever the chunks the stream comes in, on both dump paths, and the same
as the table itself read back."""
from __future__ import annotations

import hashlib
import random

import pytest
from django.db import connection

from backups.dump.cached import dump_like_session
from backups.dump.tables import TableDigests, schema_table_digests
from backups.services import backup_create
from bitacora.services import AuditContext

CONTEXT = AuditContext.system("prueba-checksums")

DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n"
    b"CREATE TABLE c.vacia (id integer);\n"
    b"COPY c.vacia (id) FROM stdin;\n\\.\n\n\n"
    b"-- a comment that mentions\n-- COPY c.falsa (id) FROM stdin;\n"
    b"COPY c.pacientes (id, nombre, nota) FROM stdin;\n"
    b"1\tAna\t\\N\n"
    b"2\tLuis\tuna barra \\\\. y un salto \\n escapado\n"
    b"3\tCOPY c.otra (x) FROM stdin;\t\\\\.\n"
    b'\\.\n\nCOPY c."Citas Raras" (id) FROM stdin;\n10\n11\n\\.\n'
    b"COPY c.ultima (id) FROM stdin;\n7\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n"
)
EXPECTED = {
    "vacia": {"rows": 0, "sha256": hashlib.sha256(b"").hexdigest()},
    "pacientes": {"rows": 3, "sha256": hashlib.sha256(
        b"1\tAna\t\\N\n2\tLuis\tuna barra \\\\. y un salto \\n escapado\n3\tCOPY c.otra (x) FROM stdin;\t\\\\.\n").hexdigest()},
    '"Citas Raras"': {"rows": 2, "sha256": hashlib.sha256(b"10\n11\n").hexdigest()},
    "ultima": {"rows": 1, "sha256": hashlib.sha256(b"7\n").hexdigest()},
}


def _fed(chunks: list[bytes]) -> dict:
    digests = TableDigests()
    for chunk in chunks:
        digests.feed(chunk)
    return digests.tables


@pytest.mark.no_test_db
def test_each_copy_block_is_counted_and_hashed_whatever_the_chunks():
    # given a dump with an empty table, escaped backslashes, COPY text inside rows and comments,
    # and a quoted table name; when it is fed whole, byte by byte, and cut at every place in two
    assert _fed([DUMP]) == EXPECTED
    assert _fed([DUMP[i:i + 1] for i in range(len(DUMP))]) == EXPECTED
    for cut in range(len(DUMP) + 1):
        assert _fed([DUMP[:cut], DUMP[cut:]]) == EXPECTED, cut
    # and in random chunk sizes
    chooser = random.Random(21)
    for _ in range(200):
        chunks, position = [], 0
        while position < len(DUMP):
            size = chooser.randint(1, 12)
            chunks.append(DUMP[position:position + size])
            position += size
        assert _fed(chunks) == EXPECTED


def _live_digests(schema: str, tables: list[str], timezone: str) -> dict:
    with dump_like_session(timezone) as session:
        return schema_table_digests(session, schema, tables)


@pytest.mark.committed
def test_both_dump_paths_record_the_rows_the_clinic_holds(committed_db, backups_dir, settings):
    # given a clinic with data; when it is backed up from the cached structure, then by pg_dump
    cached = backup_create(context=CONTEXT)
    settings.BACKUP_STRUCTURE_CACHE = False
    plain = backup_create(context=CONTEXT)
    assert (cached.manifest["dump"]["method"], plain.manifest["dump"]["method"]) == ("structure_cache", "pg_dump")
    # then both recorded the same rows for every table (but the audit log, which the first backup
    # added to), as the clinic's tables read back give them
    audit = "bitacora_bitacora"
    recorded = plain.manifest["table_checksums"]
    first = cached.manifest["table_checksums"]["tables"]
    assert {**first, audit: None} == {**recorded["tables"], audit: None}
    assert first[audit]["rows"] + 1 == recorded["tables"][audit]["rows"]
    tables = sorted(recorded["tables"])
    assert "clinica_paciente" in tables and "bitacora_bitacora" in tables
    live = _live_digests("test_restore", [table for table in tables if table != audit], recorded["timezone"])
    assert live == {table: digest for table, digest in recorded["tables"].items() if table != audit}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM clinica_paciente")
        assert recorded["tables"]["clinica_paciente"]["rows"] == cursor.fetchone()[0] > 0
    # the backup history's rows are never in a dump: its tables have no rows to record
    assert "backups_backuprecord" not in tables
