"""Kill drills: a real child process (manage.py) is SIGKILLed at each step of a backup or a
restore; afterwards the clinic is exactly as before or exactly as restored, and once the
reaper has run nothing is left behind. The kill points are core.faults'; the child dies
with SIGKILL from itself, so no finally block or atexit handler runs, as with the OOM killer."""
from __future__ import annotations

import gzip
import re
import subprocess
import time
import uuid

import pytest
from django.db import connection

from backups.files.list import file_list_key
from backups.models import BackupRecord, RestoreJob
from backups.jobs.reaper import reap
from backups.restore import CARRIED_MODELS
from backups.services import backup_create
from bitacora.services import AuditContext
from clinica.models import Cita, Paciente
from core.locks import tenant_operation_lock
from core.testing import child_environment, committed_tables, run_manage

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-kill")
SCHEMA = "test_restore"
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)
KILLED = -9


@pytest.fixture
def temp_dir(tmp_path, settings):
    """The folder every temporary file goes to, in this process and in the child."""
    path = tmp_path / "tmp"
    settings.BACKUP_TEMP_DIR = path
    return path


@pytest.fixture
def child_env(backups_dir, temp_dir, committed_db):
    # The clinic's committed state outlives test runs (--reuse-db): start from a clinic
    # with no operation left over by an earlier, failed run.
    reap()
    return {"BACKUPS_LOCAL_ROOT": str(backups_dir), "BACKUP_TEMP_DIR": str(temp_dir)}


def _clinic_rows() -> dict:
    return committed_tables(SCHEMA, exclude=CARRIED)


def _mutate() -> None:
    Paciente.objects.filter(pk__in=Paciente.objects.order_by("pk").values("pk")[:3]).update(nombre="Cambiado")
    Cita.objects.filter(pk__in=Cita.objects.order_by("pk").values("pk")[:4]).delete()
    Paciente.objects.create(nombre="Nuevo", apellido="Después", documento=f"K-{uuid.uuid4().hex[:10]}")


def _operation_schemas() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", [f"{SCHEMA}\\_\\_%"])
        return sorted(name for (name,) in cursor.fetchall())


def _files(path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def _assert_nothing_left_after_the_reaper(temp_dir) -> None:
    # The killed process is gone, but its PostgreSQL session may hold the clinic's lock a moment
    # longer (until the server reads the closed socket); a reaper then rightly leaves the clinic.
    _wait_until_the_lock_is_free(timeout=30)
    reap()
    assert _operation_schemas() == []
    assert not BackupRecord.objects.filter(status__in=BackupRecord.ACTIVE_STATUSES).exists()
    assert not RestoreJob.objects.filter(status__in=RestoreJob.ACTIVE_STATUSES).exists()
    assert _files(temp_dir) == []
    with tenant_operation_lock(SCHEMA):  # free: nobody holds the clinic any more
        pass
    assert backup_create(context=CONTEXT).status == BackupRecord.Status.COMPLETED


def _copy_line_boundary(sql: bytes, table: str, rows: int) -> int:
    """The offset just past the `rows`-th data line of a table's COPY block in a dump."""
    start = re.search(rb"^COPY [^\n]*\." + table.encode() + rb" \(.*FROM stdin;\n", sql, re.M).end()
    offset = start
    for _ in range(rows):
        offset = sql.index(b"\n", offset) + 1
    assert sql[offset:offset + 3] != b"\\.\n", "the cut must fall inside the COPY block"
    return offset


# ----------------------------------------------------------------------------- the replay itself


def test_a_script_cut_before_its_commit_rolls_back_even_when_psql_exits_0(committed_db, backups_dir):
    # given a restore script cut at a line boundary inside a COPY, as a dying feeder leaves it
    from backups.dump.pg_tools import run_psql
    from backups.dump.replay import replay_script_parts
    from backups.services import database_params, pg_binaries
    from core.schemas import operation_schemas

    backup = backup_create(context=CONTEXT)
    sql = gzip.decompress((backups_dir / backup.file_path).read_bytes())
    names = operation_schemas(SCHEMA)
    prelude, _postlude = replay_script_parts(schema=SCHEMA, staging=names.staging, aside=names.aside)
    cut = _copy_line_boundary(sql, "clinica_paciente", 2)
    _mutate()
    before = _clinic_rows()
    # when psql is fed the prelude and the dump up to there, and its input ends
    import io

    run_psql(binaries=pg_binaries(), params=database_params(), script=io.BytesIO(prelude + sql[:cut]))
    # then nothing was committed: the live clinic is untouched and no schema was left
    assert _clinic_rows() == before
    assert _operation_schemas() == []


def test_the_restore_refuses_a_replay_that_did_not_commit(committed_db, backups_dir):
    # given a stored dump that ends inside a COPY block (its checksum recorded as it is)
    import hashlib

    from backups.restore import backup_restore_in_place
    from core.exceptions import DomainError

    backup = backup_create(context=CONTEXT)
    stored = backups_dir / backup.file_path
    sql = gzip.decompress(stored.read_bytes())
    stored.write_bytes(gzip.compress(sql[:_copy_line_boundary(sql, "clinica_cita", 3)]))
    BackupRecord.objects.filter(pk=backup.pk).update(sha256=hashlib.sha256(stored.read_bytes()).hexdigest())
    _mutate()
    before = _clinic_rows()
    # when it is restored, then the restore fails (psql reads the closing SQL as COPY data,
    # or finds no COMMIT) and the clinic is as it was
    with pytest.raises(DomainError) as refused:
        backup_restore_in_place(context=CONTEXT, backup_id=backup.pk, confirm=SCHEMA)
    assert refused.value.code in ("psql_failed", "restore_failed")
    assert _clinic_rows() == before
    assert _operation_schemas() == []


# ----------------------------------------------------------------------------- SQL restore


def _kill_restore(kill_at: str, child_env: dict) -> tuple[dict, dict]:
    """Back up, change the clinic, then restore in a child killed at kill_at.
    Returns the clinic as backed up and as it was just before the restore."""
    backup = backup_create(context=CONTEXT)
    at_backup = _clinic_rows()
    _mutate()
    before = _clinic_rows()
    assert before != at_backup
    done = run_manage("restore_backup", "--tenant", SCHEMA, "--id", str(backup.pk), "--yes",
                      CLINICA_KILL_AT=kill_at, **child_env)
    assert done.returncode == KILLED, (done.returncode, done.stdout, done.stderr[-2000:])
    return at_backup, before


def _dump_offset(kind: str, backups_dir) -> int:
    """Where in the newest dump to cut: early, inside a COPY at a line boundary, or near its end."""
    backup = BackupRecord.objects.filter(status="completed").order_by("-id").first()
    sql = gzip.decompress((backups_dir / backup.file_path).read_bytes())
    if kind == "early":
        return 200
    if kind == "copy_line":
        return _copy_line_boundary(sql, "clinica_cita", 5)
    return len(sql) - 100


@pytest.mark.parametrize("kill_at", [
    "restore.before_replay",
    "restore.replay@early",
    "restore.replay@copy_line",
    "restore.replay@near_end",
    "restore.after_replay",
    "restore.swap_before_commit",
])
def test_a_restore_killed_before_its_swap_commits_leaves_the_clinic_as_it_was(committed_db, backups_dir, child_env,
                                                                              temp_dir, kill_at):
    # given a backup and later changes; when a restore is killed at this step
    if "@" in kill_at:
        backup_create(context=CONTEXT)  # the dump whose offsets we compute
        point, where = kill_at.split("@")
        kill_at = f"{point}@{_dump_offset(where, backups_dir)}"
    _at_backup, before = _kill_restore(kill_at, child_env)
    # then the live clinic is exactly as it was, row for row; no temporary file survives the child
    assert _clinic_rows() == before
    assert _files(temp_dir) == []
    # and the restore job is reported failed (interrupted) by the reaper, with nothing left behind
    job = RestoreJob.objects.order_by("-id").first()
    assert job.status == RestoreJob.Status.RUNNING
    _assert_nothing_left_after_the_reaper(temp_dir)
    job.refresh_from_db()
    assert job.status == RestoreJob.Status.FAILED and job.error_code == "interrupted"


def test_a_restore_killed_after_its_swap_leaves_the_clinic_restored(committed_db, backups_dir, child_env, temp_dir):
    # given a backup and later changes; when a restore is killed after the swap, before the old schema is dropped
    at_backup, _before = _kill_restore("restore.after_swap", child_env)
    # then the clinic is exactly as backed up; the old schema is still there for the reaper
    assert _clinic_rows() == at_backup
    assert any("__old_" in name for name in _operation_schemas())
    job = RestoreJob.objects.order_by("-id").first()
    assert job.phase == RestoreJob.Phase.SWAPPED and job.status == RestoreJob.Status.RUNNING
    # and the reaper drops it and reports the restore completed
    _assert_nothing_left_after_the_reaper(temp_dir)
    job.refresh_from_db()
    assert job.status == RestoreJob.Status.COMPLETED
    assert _clinic_rows() == at_backup


def test_a_restore_killed_while_the_swap_waits_for_its_locks(committed_db, backups_dir, child_env, temp_dir):
    # given a backup, later changes, and a transaction of the clinic holding one of its tables
    backup = backup_create(context=CONTEXT)
    _mutate()
    before = _clinic_rows()
    blocker = connection.copy()
    blocker.set_tenant(committed_db)
    with blocker.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("LOCK TABLE clinica_factura IN ROW EXCLUSIVE MODE")
        child = subprocess.Popen(
            [*_manage(), "restore_backup", "--tenant", SCHEMA, "--id", str(backup.pk), "--yes"],
            env=child_environment(BACKUP_RESTORE_LOCK_TIMEOUT="60s", **child_env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            # when the child's swap is seen waiting for that lock, it is killed
            _wait_until_blocked_by(cursor, child, timeout=60)
            child.kill()
            assert child.wait(timeout=30) == KILLED
            # its backend, still waiting for the lock, notices the dead client by itself
            # (client_connection_check_interval) and lets the clinic's lock go
            _wait_until_the_lock_is_free(timeout=30)
        finally:
            cursor.execute("ROLLBACK")
    blocker.close()
    # then nothing changed, and the reaper leaves nothing behind
    assert _clinic_rows() == before
    _assert_nothing_left_after_the_reaper(temp_dir)


def _manage() -> list[str]:
    import sys

    from django.conf import settings

    return [sys.executable, str(settings.BASE_DIR / "manage.py")]


def _wait_until_the_lock_is_free(*, timeout: float) -> None:
    from core.errors import OperationInProgressError

    deadline = time.monotonic() + timeout
    while True:
        try:
            with tenant_operation_lock(SCHEMA):
                return
        except OperationInProgressError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_until_blocked_by(cursor, child: subprocess.Popen, *, timeout: float) -> None:
    """Until some session waits for a lock this one holds (the swap's LOCK TABLE)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"the restore ended before its swap: {child.stdout.read()[-3000:]}")
        # pg_locks, not pg_stat_activity: the latter is a snapshot frozen for the whole transaction.
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))")
        if cursor.fetchone()[0]:
            return
        time.sleep(0.05)
    child.kill()
    raise AssertionError(f"the restore never reached its swap: {child.stdout.read()[-3000:]}")


# ----------------------------------------------------------------------------- backup


@pytest.mark.parametrize("kill_at", ["backup.dump@4096", "backup.before_upload", "backup.upload@4096"])
def test_a_backup_killed_mid_way_is_reaped_and_the_next_one_succeeds(committed_db, backups_dir, child_env, temp_dir, kill_at):
    # given the clinic as it is; when a backup is killed while dumping or uploading
    before = _clinic_rows()
    done = run_manage("create_backup", "--tenant", SCHEMA, CLINICA_KILL_AT=kill_at, **child_env)
    assert done.returncode == KILLED, (done.stdout, done.stderr[-2000:])
    backup = BackupRecord.objects.order_by("-id").first()
    assert backup.status == BackupRecord.Status.RUNNING
    # then the spool file holding the dump did not outlive the process
    assert _files(temp_dir) == []
    # and the reaper fails the record and removes any partial object
    _assert_nothing_left_after_the_reaper(temp_dir)
    backup.refresh_from_db()
    assert backup.status == BackupRecord.Status.FAILED and backup.error_code == "interrupted"
    assert not (backups_dir / backup.file_path).exists()
    assert _clinic_rows() == before


@pytest.mark.parametrize("kill_at", ["backup.files_list.upload@64", "backup.files_listed"])
def test_a_backup_killed_while_storing_its_file_list_is_reaped_with_the_list(committed_db, backups_dir, child_env,
                                                                             temp_dir, kill_at):
    # given a backup killed while its file list is uploaded, or once it is stored
    done = run_manage("create_backup", "--tenant", SCHEMA, CLINICA_KILL_AT=kill_at, **child_env)
    assert done.returncode == KILLED, (done.stdout, done.stderr[-2000:])
    backup = BackupRecord.objects.order_by("-id").first()
    listed = backups_dir / file_list_key(backup.file_path)
    assert backup.status == BackupRecord.Status.RUNNING and listed.exists()
    # when the reaper runs, then the record is failed and neither its dump nor its list is left
    _assert_nothing_left_after_the_reaper(temp_dir)
    backup.refresh_from_db()
    assert backup.status == BackupRecord.Status.FAILED and backup.error_code == "interrupted"
    assert not listed.exists() and not (backups_dir / backup.file_path).exists()


# ----------------------------------------------------------------------------- JSON restore


def test_a_json_restore_killed_mid_load_changes_nothing(committed_db, backups_dir, child_env, temp_dir, tmp_path):
    # given an export of the clinic, then changes
    export = tmp_path / "export.json"
    done = run_manage("export_tenant", "--tenant", SCHEMA, "-o", str(export), "-v", "0", **child_env)
    assert done.returncode == 0, done.stderr[-2000:]
    _mutate()
    before = _clinic_rows()
    # when a --replace restore of it is killed after loading its first model, inside its transaction
    done = run_manage("import_tenant", "--tenant", SCHEMA, str(export), "--replace",
                      CLINICA_KILL_AT="json_restore.loading", **child_env)
    assert done.returncode == KILLED, (done.stdout, done.stderr[-2000:])
    # then the clinic is as it was, and nothing is left
    assert _clinic_rows() == before
    _assert_nothing_left_after_the_reaper(temp_dir)


# ----------------------------------------------------------------------------- the reaper's own rules


def test_the_reaper_leaves_alone_a_clinic_whose_operation_is_alive(committed_db, backups_dir, temp_dir):
    # given a running backup record and a leftover-looking schema, while another session holds the clinic's lock
    from core.testing import operation_lock_held_elsewhere

    backup = BackupRecord.objects.create(file_name="x.sql.gz", file_path=f"{SCHEMA}/manual/x.sql.gz", status="running")
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{SCHEMA}__staging_0badc0de"')
    try:
        with operation_lock_held_elsewhere(SCHEMA):
            # when the reaper runs, then it touches nothing of that clinic
            report = reap()
            assert SCHEMA in report.busy_clinics
            assert f"{SCHEMA}__staging_0badc0de" in _operation_schemas()
            assert BackupRecord.objects.get(pk=backup.pk).status == "running"
        # once the operation is gone, it reaps both
        reap()
        assert _operation_schemas() == []
        assert BackupRecord.objects.get(pk=backup.pk).status == "failed"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}__staging_0badc0de"')


def test_the_reaper_removes_named_temporary_files_nobody_holds(temp_dir):
    import fcntl

    from core.files import temp_dir_reap, temporary_file

    # given a file left by a dead process, one a live process holds, and an anonymous one
    temp_dir.mkdir(parents=True, exist_ok=True)
    (temp_dir / "left-by-a-dead-process").write_bytes(b"patient data")
    held = open(temp_dir / "held", "wb")
    fcntl.flock(held.fileno(), fcntl.LOCK_EX)
    with temporary_file() as anonymous:
        anonymous.write(b"patient data")
        # when the reaper runs
        removed = temp_dir_reap()
        # then only the dead process's file is gone; the anonymous one never had a name
        assert removed == ["left-by-a-dead-process"]
        assert _files(temp_dir) == ["held"]
    held.close()
    assert oct(temp_dir.stat().st_mode & 0o777) == "0o700"


def test_a_reaper_pass_takes_the_lock_only_of_clinics_with_something_to_reap(committed_db, backups_dir, temp_dir):
    from django.test.utils import CaptureQueriesContext

    # given clinics with nothing left over, and one with a backup left `running` by a dead process
    reap()
    dead = BackupRecord.objects.create(file_name="z.sql.gz", file_path=f"{SCHEMA}/manual/z.sql.gz", status="running")
    # when the reaper runs
    with CaptureQueriesContext(connection) as captured:
        report = reap()
    # then it found that clinic's leftover, and took no other clinic's lock: at 10,000 clinics a pass
    # costs a few queries for all of them, not a dozen each
    assert report.backups == [f"{SCHEMA}:{dead.pk}"]
    locked = [query["sql"] for query in captured if "pg_try_advisory_lock" in query["sql"]]
    assert len(locked) == 1
