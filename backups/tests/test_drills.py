"""Restore drills (backups.drills): a backup replayed into a scratch schema and checked, the
live clinic untouched. These commit for real (marker `committed`): the replay runs in psql."""
from __future__ import annotations

import gzip
import hashlib
import re
import time
import uuid

import pytest
from django.db import connection

from backups.drills.run import drill_run
from backups.jobs.reaper import clinic_heal, reap
from backups.models import BackupRecord, DrillStatus
from backups.restore import CARRIED_MODELS, backup_restore_in_place
from backups.services import backup_create
from backups.tests.processes import paused_at
from bitacora.models import Bitacora
from bitacora.services import AuditContext
from clinica.models import Paciente
from core.locks import tenant_drill_lock
from core.schemas import schema_migrate
from core.testing import committed_tables, run_manage

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-simulacro")
SCHEMA = "test_restore"
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)
KILLED = -9


@pytest.fixture
def temp_dir(tmp_path, settings):
    path = tmp_path / "tmp"
    settings.BACKUP_TEMP_DIR = path
    return path


@pytest.fixture
def clinic(committed_db, backups_dir, temp_dir):
    reap()  # nothing left over by an earlier, failed run of the committed clinic
    return {"BACKUPS_LOCAL_ROOT": str(backups_dir), "BACKUP_TEMP_DIR": str(temp_dir)}


def _clinic_rows() -> dict:
    return committed_tables(SCHEMA, exclude=CARRIED)


def _drill_schemas() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"{SCHEMA}\\_\\_%"])
        return sorted(name for (name,) in cursor.fetchall())


def _rewrite_dump(backup: BackupRecord, backups_dir, change) -> None:
    """The stored dump's SQL changed, and its record's sha256 with it: only what is inside can tell."""
    stored = backups_dir / backup.file_path
    stored.write_bytes(gzip.compress(change(gzip.decompress(stored.read_bytes()))))
    BackupRecord.objects.filter(pk=backup.pk).update(sha256=hashlib.sha256(stored.read_bytes()).hexdigest(),
                                                     file_size=stored.stat().st_size)


def _first_row(sql: bytes, table: str) -> tuple[int, int]:
    """Where the first row of a table's COPY block starts and ends in a dump."""
    start = re.search(rb"^COPY [^\n]*\." + table.encode() + rb" \(.*FROM stdin;\n", sql, re.M).end()
    return start, sql.index(b"\n", start) + 1


def _with_first_row(table: str, rewrite):
    def change(sql: bytes) -> bytes:
        start, end = _first_row(sql, table)
        return sql[:start] + rewrite(sql[start:end]) + sql[end:]
    return change


def _drilled(backup: BackupRecord) -> BackupRecord:
    drilled = drill_run(context=CONTEXT, backup_id=backup.pk)
    assert _drill_schemas() == []  # the scratch schema is gone, whatever the outcome
    return drilled


# ----------------------------------------------------------------------------- outcomes


def test_a_drill_restores_the_latest_backup_aside_and_records_its_restore_time(clinic):
    # given a backup, and the live clinic changed since
    backup_create(context=CONTEXT)
    Paciente.objects.create(nombre="Después", apellido="Del backup", documento=f"D-{uuid.uuid4().hex[:10]}")
    before = _clinic_rows()
    # when the clinic is drilled
    drilled = drill_run(context=CONTEXT)
    # then its latest backup passed: every table compared, timed, and nothing of the live clinic changed
    latest = BackupRecord.objects.filter(status="completed").order_by("-created_at", "-id").first()
    assert drilled.pk == latest.pk
    assert drilled.drill_status == DrillStatus.PASSED, (drilled.drill_error_code, drilled.drill_error)
    assert drilled.drill_report["rows_checked"] is True and drilled.drill_report["tables"] > 10
    assert drilled.drill_seconds > 0 and drilled.drill_finished_at >= drilled.drill_started_at
    assert _clinic_rows() == before
    assert _drill_schemas() == []
    entry = Bitacora.objects.filter(action="backup.drill", target_id=str(drilled.pk)).order_by("-id").first()
    assert entry.outcome == "ok" and entry.details["restore_seconds"] == drilled.drill_seconds


def test_a_drill_catches_a_dump_whose_stored_bytes_were_damaged(clinic, backups_dir):
    # given a backup whose stored object lost bytes after it was made
    backup = backup_create(context=CONTEXT)
    stored = backups_dir / backup.file_path
    stored.write_bytes(stored.read_bytes()[:-100])
    # when it is drilled, then the drill fails on its checksum and the backup is marked damaged
    drilled = _drilled(backup)
    assert (drilled.drill_status, drilled.drill_error_code) == (DrillStatus.FAILED, "backup_checksum_mismatch")
    assert drilled.integrity == BackupRecord.Integrity.MISMATCH
    entry = Bitacora.objects.filter(action="backup.drill", target_id=str(backup.pk)).order_by("-id").first()
    assert entry.outcome == "error" and entry.details["code"] == "backup_checksum_mismatch"


def _gzip_cut(backup: BackupRecord, backups_dir) -> None:
    """The stored gzip stream cut short, its checksum recorded anew: no longer a whole gzip file."""
    stored = backups_dir / backup.file_path
    stored.write_bytes(stored.read_bytes()[:-2000])
    BackupRecord.objects.filter(pk=backup.pk).update(sha256=hashlib.sha256(stored.read_bytes()).hexdigest())


@pytest.mark.parametrize("corrupt, code", [
    pytest.param(lambda backup, folder: _rewrite_dump(backup, folder, _with_first_row(
        "clinica_paciente", lambda row: b"no-es-un-id" + row[row.index(b"\t"):])), "psql_failed", id="bad SQL"),
    pytest.param(_gzip_cut, "drill_failed", id="a cut gzip"),
])
def test_a_drill_catches_a_corrupted_dump_that_cannot_be_replayed(clinic, backups_dir, corrupt, code):
    # given a dump corrupted with its checksum recorded anew (a bad copy, a bad tool)
    backup = backup_create(context=CONTEXT)
    corrupt(backup, backups_dir)
    before = _clinic_rows()
    # when it is drilled, then the replay fails, the drill with it, and the live clinic is as it was
    drilled = _drilled(backup)
    assert (drilled.drill_status, drilled.drill_error_code) == (DrillStatus.FAILED, code), drilled.drill_error
    assert _clinic_rows() == before


@pytest.mark.parametrize("table, rewrite", [
    pytest.param("clinica_paciente", lambda row: row.replace(b"\t", b"\tX", 1), id="a value changed"),
    pytest.param("bitacora_bitacora", lambda row: b"", id="a row removed"),  # no row refers to it
])
def test_a_drill_catches_rows_changed_after_their_checksums_were_recorded(clinic, backups_dir, table, rewrite):
    # given a dump that still replays, but whose rows are not those the backup wrote
    backup = backup_create(context=CONTEXT)
    _rewrite_dump(backup, backups_dir, _with_first_row(table, rewrite))
    # when it is drilled, then it fails naming the table, and only that one
    drilled = _drilled(backup)
    assert (drilled.drill_status, drilled.drill_error_code) == (DrillStatus.FAILED, "drill_rows_mismatch"), drilled.drill_error
    assert [item["table"] for item in drilled.drill_report["error"]["tables"]] == [table]


def test_a_drill_fails_when_a_migration_cannot_apply_to_an_old_backup(clinic, backups_dir, settings):
    # given an old backup holding a patient that a later rule forbids, cleaned up in the live clinic since
    viejo = Paciente.objects.create(nombre="Viejo", apellido="Antes", documento=f"V-{uuid.uuid4().hex[:10]}")
    backup = backup_create(context=CONTEXT)
    viejo.delete()
    # and the code's new migration, applied to the live clinic
    settings.MIGRATION_MODULES = {"clinica": "backups.tests.drill_migrations"}
    try:
        schema_migrate(SCHEMA)
        # when the old backup is drilled
        drilled = _drilled(backup)
    finally:
        schema_migrate(SCHEMA, [("clinica", "0002_cita_agenda_index")])
    # then its rows came back as recorded, and the migration forward failed the drill, named
    assert (drilled.drill_status, drilled.drill_error_code) == (DrillStatus.FAILED, "drill_migration_failed"), drilled.drill_error
    assert drilled.drill_report["rows_checked"] is True and drilled.drill_report["migrated_forward"] is True
    assert drilled.drill_report["error"]["migration"] == "clinica.0003_drill_breaks_old_backups"


def test_a_drill_of_a_backup_with_a_damaged_file_object_fails(clinic, backups_dir, media_files):
    # given a backup holding radiographs, one of whose stored objects was damaged since
    media_files(count=1)
    backup = backup_create(context=CONTEXT)
    objects = sorted(path for path in (backups_dir / SCHEMA / "files").rglob("*") if path.is_file())
    assert objects
    objects[0].write_bytes(b"otra cosa")
    # when it is drilled, then the files check fails it
    drilled = _drilled(backup)
    assert (drilled.drill_status, drilled.drill_error_code) == (DrillStatus.FAILED, "drill_files_damaged")


# ----------------------------------------------------------------------------- kills, locks, the reaper


def _drill_lock_free() -> bool:
    try:
        with tenant_drill_lock(SCHEMA):
            return True
    except Exception:
        return False


@pytest.mark.parametrize("kill_at", ["drill.replay@2000", "drill.after_replay", "drill.after_migrate", "drill.before_files"])
def test_a_drill_killed_with_sigkill_leaves_nothing_the_reaper_does_not_clean(clinic, temp_dir, kill_at):
    # given a backup; when a drill of it is killed at this step
    backup = backup_create(context=CONTEXT)
    before = _clinic_rows()
    done = run_manage("drill_backup", "--tenant", SCHEMA, CLINICA_KILL_AT=kill_at, **clinic)
    assert done.returncode == KILLED, (done.stdout, done.stderr[-2000:])
    backup.refresh_from_db()
    assert backup.drill_status == DrillStatus.RUNNING
    # then the live clinic is as it was, and once the reaper ran nothing is left
    assert _clinic_rows() == before
    report = reap()
    assert _drill_schemas() == []
    assert not temp_dir.exists() or list(temp_dir.iterdir()) == []
    assert _drill_lock_free()
    backup.refresh_from_db()
    assert (backup.drill_status, backup.drill_error_code) == (DrillStatus.INTERRUPTED, "interrupted")
    assert report.drills == [f"{SCHEMA}:{backup.pk}"]
    # and the next drill passes
    assert drill_run(context=CONTEXT).drill_status == DrillStatus.PASSED


def test_the_reaper_and_self_healing_leave_a_running_drill_alone(clinic, backups_dir, tmp_path):
    # given a drill paused once its scratch schema is committed
    backup = backup_create(context=CONTEXT)
    with paused_at("drill.after_replay", "drill_backup", "--tenant", SCHEMA, backups_dir=backups_dir,
                   log=tmp_path / "drill.log") as child:
        scratch = [name for name in _drill_schemas() if "__drill_" in name]
        assert len(scratch) == 1
        # when the reaper runs and a backup of the clinic heals it first
        report = reap()
        clinic_heal(SCHEMA)
        # then the drill's schema and record are untouched
        assert _drill_schemas() == scratch and report.drills == []
        assert BackupRecord.objects.get(pk=backup.pk).drill_status == DrillStatus.RUNNING
    assert child.wait(timeout=120) == 0, (tmp_path / "drill.log").read_text()[-3000:]
    # and the drill ends on its own, passed, with its schema dropped
    assert BackupRecord.objects.get(pk=backup.pk).drill_status == DrillStatus.PASSED
    assert _drill_schemas() == []


def _replay_lock_taken_by_a_drill(timeout: float = 30) -> None:
    """Until a session holds the clinic's replay lock shared (the drill's psql, past its prelude)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND mode = 'ShareLock' "
                           "AND granted", [0x0C13])
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the drill's replay never started")


def test_a_clinics_backup_and_restore_do_not_wait_for_its_drill(clinic, backups_dir, tmp_path):
    # given a drill whose replay has renamed the live schema aside in its open transaction
    backup = backup_create(context=CONTEXT)
    log = tmp_path / "drill.log"
    with paused_at("drill.replay.prelude_fed", "drill_backup", "--tenant", SCHEMA, backups_dir=backups_dir, log=log) as child:
        _replay_lock_taken_by_a_drill()
        # when the clinic is backed up, then restored, meanwhile
        started = time.monotonic()
        assert backup_create(context=CONTEXT).status == BackupRecord.Status.COMPLETED
        backed_up = time.monotonic() - started
        restored = backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm=SCHEMA)
        restore_seconds = time.monotonic() - started - backed_up
    child.wait(timeout=120)
    # then neither waited for the drill: the restore stopped its replay, and the drill says it was interrupted
    assert backed_up < 10 and restore_seconds < 15, (backed_up, restore_seconds)
    assert restored.pk == backup.pk
    drilled = BackupRecord.objects.get(pk=backup.pk)
    assert (drilled.drill_status, drilled.drill_error_code) == (DrillStatus.INTERRUPTED, "drill_preempted"), log.read_text()[-3000:]
    assert _drill_schemas() == []


# ----------------------------------------------------------------------------- the command and the platform's button


def test_the_command_drills_a_clinic_and_exits_non_zero_when_its_drill_fails(clinic, backups_dir):
    from io import StringIO

    from django.core.management import CommandError, call_command

    # given a good backup: the command says so
    backup = backup_create(context=CONTEXT)
    output = StringIO()
    call_command("drill_backup", "--tenant", SCHEMA, stdout=output)
    assert backup.file_name in output.getvalue() and "Correcto" in output.getvalue()
    # given its rows changed since: one line, and a non-zero exit
    _rewrite_dump(backup, backups_dir, _with_first_row("clinica_paciente", lambda row: row.replace(b"\t", b"\tX", 1)))
    with pytest.raises(CommandError, match="drill_rows_mismatch"):
        call_command("drill_backup", "--tenant", SCHEMA, "--id", str(backup.pk), stdout=StringIO())


def test_the_platform_page_drills_a_clinic_at_the_push_of_a_button(clinic, committed_operator):
    # given a clinic with a backup
    backup = backup_create(context=CONTEXT)
    # when the operator pushes its "Simulacro ahora"
    response = committed_operator.post(f"/admin/plataforma/backups/{SCHEMA}/drill/", follow=True)
    # then the drill ran (inline: no broker), passed, and the page says so
    assert response.status_code == 200
    drilled = BackupRecord.objects.get(pk=backup.pk)
    assert drilled.drill_status == DrillStatus.PASSED
    shown = [str(message) for message in response.context["messages"]]
    assert any("simulacro correcto" in message and backup.file_name in message for message in shown), shown


# ----------------------------------------------------------------------------- sealed backups


def test_a_drill_opens_a_sealed_backup_and_checks_its_sealed_file_objects(clinic, sealed, backups_dir, media_files):
    # given a clinic with radiographs, its backup sealed at rest (dump, file list and contents)
    media_files(count=2)
    backup = backup_create(context=CONTEXT)
    assert (backups_dir / (backup.file_path + ".age")).exists() and not (backups_dir / backup.file_path).exists()
    # when it is drilled, then the dump is opened, replayed and compared, and every sealed content re-read
    drilled = _drilled(backup)
    assert drilled.drill_status == DrillStatus.PASSED, (drilled.drill_error_code, drilled.drill_error)
    stored_contents = backup.files.exclude(sha256="").values("sha256").distinct().count()
    assert drilled.drill_report["rows_checked"] is True and drilled.drill_report["files_checked"] == stored_contents >= 2
    # and when one sealed content loses its authenticity, the next drill fails on it
    contents = sorted(path for path in (backups_dir / SCHEMA / "files").rglob("*.age") if path.is_file())
    data = bytearray(contents[0].read_bytes())
    data[len(data) // 2] ^= 0x01
    contents[0].write_bytes(bytes(data))
    drilled = _drilled(backup)
    assert (drilled.drill_status, drilled.drill_error_code) == (DrillStatus.FAILED, "drill_files_damaged")


def test_a_drill_of_a_sealed_dump_with_a_byte_changed_fails_before_replaying_it(clinic, sealed, backups_dir):
    # given a sealed backup whose stored object had one byte changed since it was made
    backup = backup_create(context=CONTEXT)
    stored = backups_dir / (backup.file_path + ".age")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    # when it is drilled, then it fails as damaged, and nothing was replayed
    drilled = _drilled(backup)
    assert drilled.drill_status == DrillStatus.FAILED
    assert drilled.drill_error_code == "backup_object_not_authentic", drilled.drill_error_code
    assert drilled.integrity == BackupRecord.Integrity.MISMATCH
