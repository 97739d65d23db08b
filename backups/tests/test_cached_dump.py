"""SQL backups from the cached structure (backups.dump.cached) against pg_dump, the reference.

Equivalence: for the demo clinics, the benchmark's clinic and a clinic holding every field
type with awkward values, the new dump is pg_dump's text of the same snapshot (but for the
random `\\restrict` key), and both restore (`gunzip | psql`, into empty databases) to the
same catalog and the same rows. Drift: a clinic whose structure differs falls back to
pg_dump. Concurrency: a migration applied while a backup runs neither fails it nor mixes
two states into its file. These commit (marker `committed`): pg_dump sees committed data only.
"""
from __future__ import annotations

import datetime
import gzip
import io
import re
import subprocess
import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from backups.dump.cached import clinic_dump_write, clinic_snapshot
from backups.dump.reference import reference_get
from backups.models import BACKUP_HISTORY_MODELS, BackupRecord
from backups.dump.pg_tools import PgConnectionParams, dump_schema
from backups.restore import CARRIED_MODELS, backup_restore_in_place
from backups.services import _server_version, backup_create, database_params, pg_binaries
from backups.tests.processes import paused_at
from bitacora.services import AuditContext
from clinica.demo import clinic_fill
from clinica.models import Cita, Factura, LineaFactura, Odontologo, Paciente, Pago, Radiografia, Tratamiento
from core.models import Tenant
from core.schemas import schema_drop, schema_migrate
from core.testing import backend_waiting, committed_tables, other_session, scratch_database

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-estructura")
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)
HISTORY = tuple(model._meta.db_table for model in BACKUP_HISTORY_MODELS)
BENCH_SCALE = 0.2  # bench/bench_scale.py's clinic: clinic_fill at this scale
AWKWARD = "tab\there\nnew line \\ backslash \\N 'quote' \"double\" ñandú 😀 \r end"


def _reference():
    return reference_get(binaries=pg_binaries(), params=database_params(), server_version=_server_version())


def _without_key(sql: str) -> str:
    return re.sub(r"^\\(restrict|unrestrict) [A-Za-z0-9]+$", r"\\\1 KEY", sql, flags=re.MULTILINE)


def _both_dumps(schema: str) -> tuple[str, str]:
    """The cached dump and pg_dump's, of one snapshot, as SQL text."""
    reference = _reference()
    assert reference is not None
    ours, theirs = io.BytesIO(), io.BytesIO()
    with clinic_snapshot(schema, reference) as clinic:
        assert clinic.mismatch == ""
        clinic_dump_write(clinic, reference, ours)
        dump_schema(binaries=pg_binaries(), params=database_params(), schema=schema, destination=theirs,
                    snapshot=clinic.snapshot)
    return gzip.decompress(ours.getvalue()).decode(), gzip.decompress(theirs.getvalue()).decode()


def _gunzip_psql(sql: str, dbname: str) -> None:
    """`gunzip | psql` of a dump into a database, as an operator would run it."""
    params = database_params()
    environ = PgConnectionParams(host=params.host, port=params.port, user=params.user, password=params.password,
                                 dbname=dbname).environ()
    done = subprocess.run(f'gunzip -c | "{pg_binaries().psql}" -q -v ON_ERROR_STOP=1 -d "{dbname}"', shell=True,
                          input=gzip.compress(sql.encode()), env=environ, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def catalog(schema: str, dbname: str | None = None, *, exclude: tuple[str, ...] = ()) -> dict:
    """The schema's structure as the catalog reports it, and every row of every table."""
    from core.testing import _connect

    raw = _connect(dbname)
    try:
        with raw.cursor() as cursor:
            def rows(sql):
                cursor.execute(sql, [schema])
                return cursor.fetchall()

            structure = {
                "columns": rows("SELECT table_name, column_name, data_type, character_maximum_length, "
                                "numeric_precision, numeric_scale, is_nullable, column_default, is_identity, identity_generation "
                                "FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, ordinal_position"),
                "constraints": rows("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                    "WHERE connamespace = %s::regnamespace ORDER BY 1, 2"),
                "indexes": rows("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1, 2"),
                "sequences": rows("SELECT sequencename, data_type::text, start_value, min_value, max_value, increment_by, "
                                  "cycle, cache_size, last_value FROM pg_sequences WHERE schemaname = %s ORDER BY 1"),
            }
    finally:
        raw.close()
    return {**structure, "rows": committed_tables(schema, dbname=dbname, exclude=exclude)}


def _restored(sql: str, schema: str) -> dict:
    """The catalog and rows a dump restores to, but for the backup history (left out of dumps)
    and the audit log (written after the dump)."""
    with scratch_database() as scratch:
        _gunzip_psql(sql, scratch)
        restored = catalog(schema, scratch, exclude=CARRIED)
    restored.pop("sequences")
    return restored


def _diff(a: dict, b: dict) -> list:
    return [(key, sorted(set(a[key]) ^ set(b[key]), key=str)[:6]) for key in a if a[key] != b[key] and key != "rows"] + [
        ("rows", table) for table in a["rows"] if a["rows"][table] != b["rows"].get(table)]


def _live(schema: str) -> dict:
    live = catalog(schema, exclude=CARRIED)
    live.pop("sequences")
    return live


def _assert_equivalent(schema: str) -> None:
    # when the clinic is dumped both ways from one snapshot
    ours, theirs = _both_dumps(schema)
    # then the text is pg_dump's, but for the \restrict key
    assert _without_key(ours) == _without_key(theirs)
    keys = [re.findall(r"^\\restrict (\S+)$", sql, flags=re.MULTILINE) for sql in (ours, theirs)]
    assert keys[0] != keys[1] or keys == [[], []]  # a key of its own
    # and each restores, by `gunzip | psql` into an empty database, to the same catalog and rows
    with scratch_database() as mine, scratch_database() as pg_dumps:
        _gunzip_psql(ours, mine)
        _gunzip_psql(theirs, pg_dumps)
        restored = catalog(schema, mine)
        assert restored == catalog(schema, pg_dumps)
    # (the backup history's rows are left out of every dump: its tables come back empty)
    assert {table: rows for table, rows in restored["rows"].items() if table not in HISTORY} == catalog(
        schema, exclude=HISTORY)["rows"]
    assert [restored["rows"][table] for table in HISTORY] == [[] for _ in HISTORY]
    assert sum(len(rows) for rows in restored["rows"].values()) > 0


@pytest.fixture(scope="module")
def new_clinic(django_db_blocker, tenants):
    """new_clinic("name") → a committed clinic of its own (migrations run), dropped after the module."""
    made = []

    def make(schema: str) -> Tenant:
        with django_db_blocker.unblock(), schema_context("public"):
            Tenant.objects.filter(schema_name=schema).delete()
            schema_drop(schema)
            tenant = Tenant.objects.create(schema_name=schema, slug=schema.replace("_", "-"), nombre=schema)
        made.append(schema)
        return tenant

    yield make
    with django_db_blocker.unblock(), schema_context("public"):
        for schema in made:
            Tenant.objects.filter(schema_name=schema).delete()
            schema_drop(schema)


def _awkward_rows() -> None:
    """One row per model with every field set, to the edge: text COPY must escape, numbers at
    their limits, JSON nested, nulls where they are allowed, and the rows that leave them null."""
    when = datetime.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=datetime.timezone.utc)
    first = Paciente.objects.create(nombre=AWKWARD[:100], apellido="Ñ" * 100, documento="D\\1\t", fecha_nacimiento=datetime.date(1, 1, 1),
                                    telefono="+\\N", email="x@ñ.example", direccion=AWKWARD,
                                    alergias=[{"a": AWKWARD, "n": [1, 2.5, None, True]}, "\\u0000 no", []], created_at=when)
    Paciente.objects.create(nombre="", apellido="", documento="vacío", referido_por=first, activo=False, alergias={})
    dentist = Odontologo.objects.create(nombre=AWKWARD[:150], especialidad="", matricula="M\t1", activo=False)
    treatment = Tratamiento.objects.create(codigo="T\n1", nombre=AWKWARD[:150], precio=Decimal("99999999.99"),
                                           duracion_minutos=2147483647, detalles={"\\": {"deep": [[["x"]]]}, "": None})
    Cita.objects.create(paciente=first, odontologo=dentist, tratamiento=treatment, inicio=when, duracion_minutos=0,
                        estado="cancelada", motivo=AWKWARD * 50)
    Cita.objects.create(paciente=first, odontologo=dentist, inicio=datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc))
    invoice = Factura.objects.create(numero="F\\0001", paciente=first, fecha=datetime.date(9999, 12, 31),
                                     total=Decimal("-9999999999.99"), uuid=uuid.UUID(int=0))
    LineaFactura.objects.create(factura=invoice, tratamiento=treatment, cantidad=0, precio_unitario=Decimal("0.01"),
                                pieza_dental=32767)
    LineaFactura.objects.create(factura=invoice, tratamiento=treatment, precio_unitario=Decimal("-0.01"))
    Pago.objects.create(factura=invoice, monto=Decimal("0.00"), metodo="efectivo", pagado_en=when, referencia=uuid.UUID(int=2**128 - 1))
    Radiografia.objects.create(paciente=first, archivo="radiografias/ñ 😀\\x.png", descripcion=AWKWARD[:200],
                               tomada_en=datetime.date(2000, 2, 29))


@pytest.mark.parametrize("schema", ["test_a", "test_b", "test_restore"])
def test_the_demo_clinics_dump_as_pg_dump_does(committed_db, schema):
    _assert_equivalent(schema)


def test_the_benchmark_clinic_dumps_as_pg_dump_does(committed_db, new_clinic):
    new_clinic("test_cd_bench")
    with schema_context("test_cd_bench"):
        clinic_fill(scale=BENCH_SCALE)
    _assert_equivalent("test_cd_bench")


def test_a_clinic_with_every_field_type_dumps_as_pg_dump_does(committed_db, new_clinic):
    new_clinic("test_cd_tipos")
    with schema_context("test_cd_tipos"):
        clinic_fill(scale=0.02)
        _awkward_rows()
    _assert_equivalent("test_cd_tipos")


def test_the_sql_restore_round_trip_with_a_cached_structure_backup(committed_db, backups_dir):
    # given a backup of the clinic made from the cached structure, and later changes
    backup = backup_create(context=CONTEXT)
    assert backup.manifest["dump"] == {"method": "structure_cache"}
    at_backup = committed_tables("test_restore", exclude=CARRIED)
    Paciente.objects.filter(pk__in=Paciente.objects.order_by("pk").values("pk")[:3]).update(nombre="Cambiado")
    Cita.objects.filter(pk__in=Cita.objects.order_by("pk").values("pk")[:4]).delete()
    # when it is restored in place (the replay renames around the dump, which names the live schema)
    backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    # then every table is as it was, row by row, and new rows insert (sequences were set)
    assert committed_tables("test_restore", exclude=CARRIED) == at_backup
    Paciente.objects.create(nombre="Nuevo", apellido="Después", documento=f"N-{uuid.uuid4().hex[:10]}")


@pytest.mark.parametrize("structure_cache", [True, False])
def test_a_backup_replayed_by_hand_holds_no_backup_history(committed_db, settings, backups_dir, structure_cache):
    # given a clinic with earlier backups, backed up from the cached structure or by pg_dump
    settings.BACKUP_STRUCTURE_CACHE = structure_cache
    backup = [backup_create(context=CONTEXT) for _ in range(2)][-1]
    assert backup.manifest["dump"]["method"] == ("structure_cache" if structure_cache else "pg_dump")
    # when an operator who lost the database replays it with `gunzip | psql`
    with scratch_database() as scratch:
        _gunzip_psql(_stored_sql(backup, backups_dir), scratch)
        restored = catalog("test_restore", scratch)["rows"]
    # then its own record (`running` then: the reaper would fail it, deleting this dump) and
    # the other backups' file lists are not there; the clinic's data is
    assert [restored[table] for table in HISTORY] == [[] for _ in HISTORY] and restored["clinica_paciente"]


# -- drift


@pytest.fixture
def drift_clinic(new_clinic):
    tenant = new_clinic("test_cd_drift")
    with schema_context("test_cd_drift"):
        if not Paciente.objects.exists():
            clinic_fill(scale=0.02)
    connection.set_tenant(tenant)
    yield "test_cd_drift"
    connection.set_schema_to_public()


def _stored_sql(backup: BackupRecord, backups_dir) -> str:
    return gzip.decompress((backups_dir / backup.file_path).read_bytes()).decode()


@pytest.mark.parametrize("drift", ["extra_index", "missing_migration", "hand_made_view"])
def test_a_clinic_that_drifted_from_the_reference_is_dumped_by_pg_dump(committed_db, drift_clinic, backups_dir, drift):
    # given a clinic with a hand-made index, one migration behind the code, or an object of a
    # kind the cached structure never holds (a view)
    if drift == "extra_index":
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE INDEX paciente_telefono_a_mano ON "{drift_clinic}".clinica_paciente (telefono)')
    elif drift == "hand_made_view":
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE VIEW "{drift_clinic}".pacientes_activos AS '
                           f'SELECT id, nombre FROM "{drift_clinic}".clinica_paciente WHERE activo')
    else:
        schema_migrate(drift_clinic, [("clinica", "0001_initial")])
    # when it is backed up
    backup = backup_create(context=CONTEXT)
    # then pg_dump made it, the manifest says why, and it restores to the clinic as it is
    assert backup.manifest["dump"] == {"method": "pg_dump", "reason": "structure_differs"}
    restored, live = _restored(_stored_sql(backup, backups_dir), drift_clinic), _live(drift_clinic)
    assert restored == live, _diff(restored, live)
    assert ("paciente_telefono_a_mano" in _stored_sql(backup, backups_dir)) == (drift == "extra_index")
    assert ("cita_agenda_idx" in _stored_sql(backup, backups_dir)) == (drift != "missing_migration")
    assert ("pacientes_activos" in _stored_sql(backup, backups_dir)) == (drift == "hand_made_view")
    if drift == "missing_migration":
        assert backup.manifest["migrations"]["clinica"] == "0001_initial"


# -- concurrency


def _wait_until(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _latest_backup() -> BackupRecord:
    return BackupRecord.objects.order_by("-id").first()


def test_a_migration_waiting_on_a_running_backup_is_not_in_its_file(committed_db, drift_clinic, backups_dir, tmp_path):
    # given the clinic as it is, and a backup paused once its snapshot is taken
    before = _live(drift_clinic)
    outcome: dict = {}

    def migrate_back() -> None:  # DROP INDEX: an ACCESS EXCLUSIVE lock, which the backup's locks hold off
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                outcome["pid"] = cursor.fetchone()[0]
            schema_migrate(drift_clinic, [("clinica", "0001_initial")])
            outcome["done"] = True
        finally:
            connection.close()

    with paused_at("backup.snapshot_taken", "create_backup", "--tenant", drift_clinic, backups_dir=backups_dir,
                   log=tmp_path / "backup.log") as child:
        # when a migration starts meanwhile
        thread = threading.Thread(target=migrate_back)
        thread.start()
        with other_session() as observer:
            _wait_until(lambda: "pid" in outcome and backend_waiting(observer, outcome["pid"]))
        assert "done" not in outcome
    # then the backup finishes from the cached structure, as of its snapshot
    assert child.wait(timeout=120) == 0, (tmp_path / "backup.log").read_text()
    thread.join(timeout=60)
    assert outcome.get("done")
    backup = _latest_backup()
    assert backup.status == "completed" and backup.manifest["dump"] == {"method": "structure_cache"}
    assert backup.manifest["migrations"]["clinica"] == "0002_cita_agenda_index"
    assert _restored(_stored_sql(backup, backups_dir), drift_clinic) == before
    assert "cita_agenda_idx" not in str(_live(drift_clinic)["indexes"])  # the migration did run afterwards


@pytest.mark.parametrize("change", ["migration", "new_table"])
def test_a_migration_applied_before_the_backup_locks_the_clinic_is_all_in_its_file(
    committed_db, drift_clinic, backups_dir, tmp_path, change
):
    # given a backup paused after it listed the clinic's tables, before it locks them
    with paused_at("backup.tables_listed", "create_backup", "--tenant", drift_clinic, backups_dir=backups_dir,
                   log=tmp_path / "backup.log") as child:
        # when a migration (or a table made by hand) commits meanwhile
        if change == "migration":
            schema_migrate(drift_clinic, [("clinica", "0001_initial")])
        else:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE TABLE "{drift_clinic}".hecha_a_mano (id int)')
    # then the backup sees it whole, and since the clinic no longer matches the reference, pg_dump made it
    assert child.wait(timeout=120) == 0, (tmp_path / "backup.log").read_text()
    backup = _latest_backup()
    assert backup.status == "completed"
    assert backup.manifest["dump"] == {"method": "pg_dump", "reason": "structure_differs"}
    restored, live = _restored(_stored_sql(backup, backups_dir), drift_clinic), _live(drift_clinic)
    assert restored == live, _diff(restored, live)
    expected = "0001_initial" if change == "migration" else "0002_cita_agenda_index"
    assert backup.manifest["migrations"]["clinica"] == expected
    if change == "new_table":
        with connection.cursor() as cursor:
            cursor.execute(f'DROP TABLE "{drift_clinic}".hecha_a_mano')


# -- the reference's schema


def test_a_reference_schema_left_by_a_dead_build_is_reaped_unless_its_build_is_alive(committed_db):
    from backups.jobs.reaper import reap
    from core.testing import operation_lock_held_elsewhere

    # given two reference schemas left behind, one of them still being built by a live process
    dead, alive = "backups__ref_00000000000000de", "backups__ref_0000000000a11e00"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{dead}"; CREATE SCHEMA "{alive}"')
    try:
        with operation_lock_held_elsewhere(alive):
            # when the reaper runs
            report = reap()
        # then the dead build's schema is gone, the live one's kept
        assert dead in report.schemas and alive not in report.schemas
        with connection.cursor() as cursor:
            cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname IN (%s, %s)", [dead, alive])
            assert [name for (name,) in cursor.fetchall()] == [alive]
    finally:
        schema_drop(dead)
        schema_drop(alive)


def test_the_reference_is_built_once_and_read_back_from_the_cache_folder(committed_db, settings, tmp_path):
    from backups.dump import reference as dump_reference

    # given an empty cache folder and no reference in memory
    settings.BACKUP_STRUCTURE_CACHE_DIR = tmp_path / "cache"
    dump_reference.references_forget()
    try:
        # when a reference is asked for twice, the second time by a process that starts afresh
        first = _reference()
        dump_reference.references_forget()
        second = _reference()
        # then it was built once, left nothing in the database, and read back the same
        assert len(list((tmp_path / "cache").glob("reference-*.json"))) == 1
        assert second.as_json() == first.as_json()
        assert dump_reference.reference_schemas_left() == []
        assert all(dump_reference.rename_is_exact(entry.text, first.schema) for entry in first.entries)
    finally:
        dump_reference.references_forget()
