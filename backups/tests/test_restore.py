"""Restore drills. These commit for real (marker `committed`): the schema swap and the
psql replay run in other sessions and transactions than the test's."""
import gzip
import hashlib
import uuid

import pytest
from django.core.management import call_command
from django.db import connection

from backups.errors import BackupChecksumMismatchError, StorageObjectMissingError
from backups.files.restore import new_clinic_rename
from backups.models import BackupRecord
from backups.restore import CARRIED_MODELS, backup_restore_as_new_tenant, backup_restore_in_place
from backups.services import backup_create
from bitacora.models import Bitacora
from bitacora.services import AuditContext
from clinica.models import Cita, Factura, Paciente, Radiografia
from core.models import Tenant
from core.schemas import schema_drop, schema_migrate
from core.errors import InvalidTenantNameError, RestoreBusyError, TenantExistsError
from core.selectors import migration_state
from core.testing import committed_tables

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-restore")
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)
RADIOGRAFIA = Radiografia._meta.db_table


def _with_archivo(row: tuple, rename) -> tuple:
    """A clinica_radiografia row (as committed_tables reads it) with its file path renamed."""
    with connection.cursor() as cursor:
        columns = [column.name for column in connection.introspection.get_table_description(cursor, RADIOGRAFIA)]
    index = columns.index("archivo")
    return row[:index] + (rename(row[index]),) + row[index + 1:]


def _restored_data() -> dict:
    return committed_tables("test_restore", exclude=CARRIED)


def _leftover_schemas() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'test_restore\\_\\_%'")
        return [name for (name,) in cursor.fetchall()]


def _mutate() -> None:
    Paciente.objects.filter(pk__in=Paciente.objects.order_by("pk").values("pk")[:5]).update(nombre="Cambiado")
    Cita.objects.filter(pk__in=Cita.objects.order_by("pk").values("pk")[:7]).delete()
    Paciente.objects.create(nombre="Nuevo", apellido="Después", documento=f"N-{uuid.uuid4().hex[:10]}")


def test_restore_drill_through_the_api(committed_db, backups_dir, client_for):
    # given a backup of the clinic, and its data at that moment
    client = client_for("test_restore", "admin")
    backup = client.post("/api/backups/create/", {}, content_type="application/json").json()["backup"]
    at_backup_time = _restored_data()
    # and changes, deletions and additions afterwards
    _mutate()
    assert _restored_data() != at_backup_time
    entries_before_restore = Bitacora.objects.count()
    # when the admin restores it
    response = client.post(f"/api/backups/history/{backup['id']}/restore/", {"confirm": "test_restore"}, content_type="application/json")
    # then every clinic table is as it was, row by row
    assert response.status_code == 200, response.content
    assert response.json()["success"] is True
    restored = _restored_data()
    assert [table for table in at_backup_time if restored[table] != at_backup_time[table]] == []
    # the backup history and the audit log kept the later rows (including this restore's)
    assert BackupRecord.objects.filter(pk=backup["id"], status="completed").exists()
    assert Bitacora.objects.count() > entries_before_restore
    assert Bitacora.objects.filter(action="backup.restore", outcome="ok", target_id=str(backup["id"])).exists()
    assert Bitacora.objects.filter(action="backup.create", target_id=str(backup["id"])).exists()
    # sequences are right: new rows insert without collisions
    Paciente.objects.create(nombre="Otro", apellido="Más", documento=f"N-{uuid.uuid4().hex[:10]}")
    record_after = BackupRecord.objects.create(file_name="x", file_path="x", status="failed")
    record_after.delete()
    assert _leftover_schemas() == []


def test_a_failure_during_the_replay_leaves_the_live_schema_unchanged(committed_db, backups_dir):
    # given a stored dump with a valid checksum that fails halfway through the replay
    backup = backup_create(context=CONTEXT)
    stored = backups_dir / backup.file_path
    sql = gzip.decompress(stored.read_bytes())
    broken = sql.replace(b"CREATE INDEX", b"SELECT 1/0;\nCREATE INDEX", 1)
    stored.write_bytes(gzip.compress(broken))
    BackupRecord.objects.filter(pk=backup.pk).update(sha256=hashlib.sha256(stored.read_bytes()).hexdigest(), file_size=stored.stat().st_size)
    _mutate()
    before = _restored_data()
    # when
    with pytest.raises(Exception) as raised:
        backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    # then
    assert "division by zero" in str(getattr(raised.value, "message", raised.value)) or raised.value.code == "psql_failed"
    assert _restored_data() == before
    assert _leftover_schemas() == []
    assert Bitacora.objects.filter(action="backup.restore", outcome="error", target_id=str(backup.pk)).exists()


def test_a_failure_during_the_swap_leaves_the_live_schema_unchanged(committed_db, backups_dir, settings):
    # given a backup, later changes, and another session holding a lock on a clinic table
    backup = backup_create(context=CONTEXT)
    _mutate()
    before = _restored_data()
    settings.BACKUP_RESTORE_LOCK_TIMEOUT = "200ms"
    other = connection.copy()
    other.set_tenant(committed_db)
    with other.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("LOCK TABLE clinica_factura IN ROW EXCLUSIVE MODE")
        try:
            # when
            with pytest.raises(RestoreBusyError):
                backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
        finally:
            cursor.execute("ROLLBACK")
    other.close()
    # then
    assert _restored_data() == before
    assert _leftover_schemas() == []
    assert Factura.objects.exists()


@pytest.mark.parametrize("damage", ["flip_byte", "remove"])
def test_a_corrupted_or_missing_object_is_refused_and_nothing_changes(committed_db, backups_dir, damage):
    backup = backup_create(context=CONTEXT)
    _mutate()
    before = _restored_data()
    stored = backups_dir / backup.file_path
    if damage == "flip_byte":
        data = bytearray(stored.read_bytes())
        data[len(data) // 3] ^= 0x01
        stored.write_bytes(bytes(data))
        expected_error, expected_integrity = BackupChecksumMismatchError, "mismatch"
    else:
        stored.unlink()
        expected_error, expected_integrity = StorageObjectMissingError, "missing"
    with pytest.raises(expected_error):
        backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    assert _restored_data() == before
    assert BackupRecord.objects.get(pk=backup.pk).integrity == expected_integrity


def test_restore_requires_typing_the_schema_name(committed_db, backups_dir, client_for):
    backup = backup_create(context=CONTEXT)
    client = client_for("test_restore", "admin")
    response = client.post(f"/api/backups/history/{backup.pk}/restore/", {"confirm": "otra"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "restore_confirmation_mismatch"
    assert client_for("test_restore", "recepcion").post(
        f"/api/backups/history/{backup.pk}/restore/", {"confirm": "test_restore"}, content_type="application/json"
    ).status_code == 403
    # another clinic's token or admin cannot reach it
    assert client_for("test_a").post(
        f"/api/backups/history/{backup.pk}/restore/", {"confirm": "test_a"}, content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {client.tokens['access']}",
    ).status_code == 401


def test_restore_command(committed_db, backups_dir):
    backup = backup_create(context=CONTEXT)
    at_backup_time = _restored_data()
    _mutate()
    call_command("restore_backup", "--tenant", "test_restore", "--id", str(backup.pk), "--yes")
    connection.set_tenant(committed_db)
    assert _restored_data() == at_backup_time


def test_a_backup_from_an_older_migration_state_is_migrated_forward(committed_db, backups_dir):
    # given a backup taken while the clinic was one clinica migration behind
    latest = migration_state()["clinica"]
    previous = "0001_initial"
    assert latest != previous
    schema_migrate("test_restore", targets=[("clinica", previous)])
    try:
        backup = backup_create(context=CONTEXT)
    finally:
        schema_migrate("test_restore")
    assert backup.manifest["migrations"]["clinica"] == previous
    at_backup_time = _restored_data()
    _mutate()
    # when it is restored by code that is one migration ahead
    backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm="test_restore")
    # then the clinic holds the backup's data on the code's schema
    assert migration_state()["clinica"] == latest
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE schemaname = 'test_restore' AND indexname = 'cita_agenda_idx'")
        assert cursor.fetchone() is not None
    restored = _restored_data()
    assert [table for table in at_backup_time if table != "django_migrations" and restored[table] != at_backup_time[table]] == []
    assert _leftover_schemas() == []


def test_restore_as_a_new_tenant_leaves_the_live_clinic_alone(committed_db, backups_dir, media_files):
    # given a backup (every radiograph with its file), and later changes to the live clinic
    media_files()
    backup = backup_create(context=CONTEXT)
    at_backup_time = _restored_data()
    _mutate()
    live_now = _restored_data()
    new_schema = f"test_restore_copia_{uuid.uuid4().hex[:6]}"
    try:
        # when it is restored as a new clinic
        call_command("restore_backup", "--tenant", "test_restore", "--id", str(backup.pk), "--as-new-tenant", new_schema)
        connection.set_tenant(committed_db)
        # then the new clinic holds the backup's data, its files in its own folder; the live one keeps its changes
        copy = committed_tables(new_schema, exclude=CARRIED)
        assert [table for table in at_backup_time if table != RADIOGRAFIA and copy[table] != at_backup_time[table]] == []
        in_new_folder = new_clinic_rename("test_restore", new_schema)
        assert copy[RADIOGRAFIA] == [_with_archivo(row, in_new_folder) for row in at_backup_time[RADIOGRAFIA]]
        assert _restored_data() == live_now
        assert Tenant.objects.filter(schema_name=new_schema, slug=new_schema.replace("_", "-")).exists()
        assert _leftover_schemas() == []
        # and the new name cannot be taken twice
        with pytest.raises(TenantExistsError):
            backup_restore_as_new_tenant(context=CONTEXT, backup_id=backup.pk, schema_name=new_schema, nombre="otra")
    finally:
        connection.set_schema_to_public()
        Tenant.objects.filter(schema_name=new_schema).delete()
        schema_drop(new_schema)
        connection.set_tenant(committed_db)


@pytest.mark.parametrize("name", ["Mayusculas", "1empieza", "public", "test_restore", "con__doble"])
def test_restore_as_a_new_tenant_refuses_bad_or_taken_names(committed_db, name):
    with pytest.raises((InvalidTenantNameError, TenantExistsError)):
        backup_restore_as_new_tenant(context=CONTEXT, backup_id=0, schema_name=name, nombre="x")
