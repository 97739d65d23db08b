"""Jobs on a real Celery worker over a real Redis at TEST_REDIS_URL (127.0.0.1:6379/15 unless
set; `make test` starts one there when none answers), the broker of production on Render:
the API's 201/200 when the job finishes within the wait, 202 and polling when not, and a
worker killed mid-restore reaped by the next one at its start."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection

from backups.models import RestoreJob
from backups.jobs.reaper import reap
from backups.restore import CARRIED_MODELS
from backups.services import backup_create
from bitacora.services import AuditContext
from clinica.models import Paciente
from core.celery import app as celery_app
from core.testing import child_environment, committed_tables

pytestmark = pytest.mark.committed
REDIS = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
SCHEMA = "test_restore"
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)
POLL_TIMEOUT = 60


def _redis_answers(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _redis_answers(REDIS):
        pytest.fail(f"Redis does not answer at {REDIS}: `make test` starts one there, or "
                    f"`python -m core.embedded_redis start {REDIS}` — the job tests need a real broker.")
    return REDIS


@pytest.fixture(scope="session")
def job_queue(redis_url):
    # This session's own keys on the shared Redis: other runs (and their leftovers) never mix in,
    # and they are removed at the end (Redis outlives the session).
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    broker = redis.Redis.from_url(redis_url)
    for key in broker.scan_iter(f"{prefix}*"):
        broker.delete(key)
    broker.close()


@pytest.fixture(scope="session")
def worker_backups_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("worker-backups")


@contextmanager
def celery_worker(redis_url: str, queue: str, backups_dir, **env: str):
    """`celery -A core worker` in a child process, on this session's database, until the block ends."""
    log_path = backups_dir.parent / f"worker-{uuid.uuid4().hex[:6]}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "core", "worker", "--pool=solo", "-l", "info",
             "--without-heartbeat", "--without-gossip", "--without-mingle", "-n", f"{queue}{uuid.uuid4().hex[:4]}@%h"],
            env=child_environment(CELERY_BROKER_URL=redis_url, JOB_KEY_PREFIX=queue, BACKUPS_LOCAL_ROOT=str(backups_dir), **env),
            stdout=log, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR,
        )
    process.log = lambda: log_path.read_text()
    try:
        deadline = time.monotonic() + POLL_TIMEOUT
        while " ready." not in log_path.read_text():  # the worker says so once it consumes
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the Celery worker did not start:\n" + process.log())
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def send_to_workers(redis_url, job_queue, settings, worker_backups_dir):
    """This process sends jobs to the broker instead of running them inline, as the web service does."""
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": worker_backups_dir}},
    }
    saved = {key: celery_app.conf[key] for key in ("task_always_eager", "broker_url", "broker_transport_options")}
    celery_app.conf.update(task_always_eager=False, broker_url=redis_url,
                           broker_transport_options={**saved["broker_transport_options"], "global_keyprefix": job_queue})
    _forget_broker_connections()
    # No job left over on the committed clinic by an earlier run, not even one still queued.
    settings.JOB_PENDING_MAX_AGE = timedelta(0)
    reap()
    settings.JOB_PENDING_MAX_AGE = timedelta(hours=1)
    try:
        yield
    finally:
        celery_app.conf.update(saved)
        _forget_broker_connections()


def _forget_broker_connections() -> None:
    # The app keeps the connection pool it made first; a new broker setting needs a new
    # pool (what Celery itself does after a fork).
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def worker(send_to_workers, redis_url, job_queue, worker_backups_dir):
    with celery_worker(redis_url, job_queue, worker_backups_dir) as process:
        yield process


def _poll(client, url: str) -> dict:
    deadline = time.monotonic() + POLL_TIMEOUT
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["status"] not in ("pending", "running"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{url} still running after {POLL_TIMEOUT} s: {body}")


def test_create_answers_201_when_the_worker_finishes_within_the_wait(committed_db, worker, client_for, settings):
    # given a worker and a generous wait
    settings.JOB_WAIT_SECONDS = POLL_TIMEOUT
    # when the seed's front end creates a backup
    response = client_for(SCHEMA, "admin").post("/api/backups/create/", {"backup_type": "manual"}, content_type="application/json")
    # then it gets the seed's answer, made by the worker
    assert response.status_code == 201, (response.content, worker.log())
    body = response.json()
    assert body["success"] is True and body["message"] == "Backup creado exitosamente"
    assert body["backup"]["status"] == "completed" and len(body["backup"]["sha256"]) == 64
    assert {"id", "file_name", "file_size_mb", "created_at"} <= body["backup"].keys()


def test_create_answers_202_with_a_location_to_poll_when_the_job_outlasts_the_wait(
    committed_db, send_to_workers, redis_url, job_queue, worker_backups_dir, client_for, settings
):
    # given no worker free yet, and a short wait
    settings.JOB_WAIT_SECONDS = 0.2
    client = client_for(SCHEMA, "admin")
    # when a backup is created
    response = client.post("/api/backups/create/", {"backup_type": "manual"}, content_type="application/json")
    # then the answer says it is in progress, with the record and where to poll it
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["success"] is True and body["backup"]["status"] == "pending"
    assert response["Location"] == f"/api/backups/history/{body['backup']['id']}/"
    # and while it waits, a second operation on the clinic is refused
    second = client.post("/api/backups/create/", {}, content_type="application/json")
    assert second.status_code == 409 and second.json()["code"] == "backup_in_progress"
    restore = client.post(f"/api/backups/history/{body['backup']['id']}/restore/", {"confirm": SCHEMA},
                          content_type="application/json")
    assert restore.status_code == 409
    # when a worker starts, then polling shows it finishing the backup
    with celery_worker(redis_url, job_queue, worker_backups_dir):
        polled = _poll(client, response["Location"])
    assert polled["status"] == "completed" and polled["progress_bytes"] == polled["file_size"] > 0


def test_restore_answers_202_and_the_job_can_be_polled_to_the_end(committed_db, worker, client_for, settings):
    # given a backup, and later changes
    backup = backup_create(context=AuditContext.system("prueba-worker"))
    at_backup = committed_tables(SCHEMA, exclude=CARRIED)
    Paciente.objects.filter(pk=Paciente.objects.order_by("pk").values("pk")[:1]).update(nombre="Cambiado por el test")
    settings.JOB_WAIT_SECONDS = 0
    client = client_for(SCHEMA, "admin")
    # when it is restored through the API
    response = client.post(f"/api/backups/history/{backup.pk}/restore/", {"confirm": SCHEMA}, content_type="application/json")
    # then 202 and a restore job to poll, which the worker completes
    assert response.status_code == 202, response.content
    job = response.json()["restore"]
    assert response["Location"] == f"/api/backups/restores/{job['id']}/"
    assert job["status"] in ("pending", "running") and job["backup_id"] == backup.pk
    polled = _poll(client, response["Location"])
    assert polled["status"] == "completed" and polled["phase"] == "done", polled
    assert polled["started_at"] and polled["finished_at"] and polled["error"] == ""
    # and its progress ends at the dump's whole size, small as it is
    assert polled["progress_bytes"] == polled["total_bytes"] == backup.sql_size > 0
    assert committed_tables(SCHEMA, exclude=CARRIED) == at_backup


def test_a_worker_killed_mid_restore_is_reaped_by_the_next_one(committed_db, send_to_workers, redis_url, job_queue,
                                                              worker_backups_dir, client_for, settings):
    # given a backup, later changes, and a worker that dies (SIGKILL) once the replay is done
    backup = backup_create(context=AuditContext.system("prueba-worker"))
    Paciente.objects.filter(pk=Paciente.objects.order_by("pk").values("pk")[:1]).update(nombre="Antes de la muerte")
    before = committed_tables(SCHEMA, exclude=CARRIED)
    settings.JOB_WAIT_SECONDS = 0
    client = client_for(SCHEMA, "admin")
    with celery_worker(redis_url, job_queue, worker_backups_dir, CLINICA_KILL_AT="restore.after_replay") as doomed:
        response = client.post(f"/api/backups/history/{backup.pk}/restore/", {"confirm": SCHEMA},
                               content_type="application/json")
        assert response.status_code == 202, response.content
        assert doomed.wait(timeout=POLL_TIMEOUT) == -9
    job_url = response["Location"]
    assert client.get(job_url).json()["status"] == "running"  # nobody will finish it
    # when the next worker starts (it reaps first)
    with celery_worker(redis_url, job_queue, worker_backups_dir):
        polled = client.get(job_url).json()
    # then the restore is reported interrupted, and the clinic is as it was
    assert polled["status"] == "failed" and polled["error_code"] == "interrupted", polled
    assert committed_tables(SCHEMA, exclude=CARRIED) == before
    assert not RestoreJob.objects.filter(status__in=RestoreJob.ACTIVE_STATUSES).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", [f"{SCHEMA}\\_\\_%"])
        assert cursor.fetchone()[0] == 0


def test_a_backup_retries_a_storage_that_does_not_answer_then_fails_clearly(committed_db, send_to_workers, redis_url,
                                                                          job_queue, worker_backups_dir, client_for,
                                                                          settings):
    # given a worker whose backups storage (Supabase) refuses every connection, two retries, no wait
    from backups.tests.supabase_server import closed_port_url

    settings.JOB_WAIT_SECONDS = 0
    client = client_for(SCHEMA, "admin")
    with celery_worker(redis_url, job_queue, worker_backups_dir, SUPABASE_URL=closed_port_url(),
                       SUPABASE_KEY="clave-de-prueba", BACKUP_STORAGE_RETRIES="2", BACKUP_RETRY_BASE_SECONDS="0") as worker:
        # when a backup is created
        response = client.post("/api/backups/create/", {"backup_type": "manual"}, content_type="application/json")
        assert response.status_code == 202, response.content
        polled = _poll(client, response["Location"])
        log = worker.log()
    # then it was tried three times, and ends failed with the storage's own error, nothing stored
    assert log.count("Retry in 0s") == 2, log[-4000:]
    assert polled["status"] == "failed" and polled["error_code"] == "storage_unavailable", polled


def test_the_nightly_run_only_enqueues_one_job_per_clinic_and_workers_do_them(committed_db, send_to_workers, redis_url,
                                                                             job_queue, worker_backups_dir, receiver):
    # given a broker; when the cron's command runs
    from django.utils import timezone
    from django_tenants.utils import schema_context

    from backups.models import BackupRecord

    def automatic_completed() -> dict[str, int]:
        counts = {}
        for schema in ("test_a", "test_b", SCHEMA):
            with schema_context(schema):
                counts[schema] = BackupRecord.objects.filter(backup_type="automatic", status="completed").count()
        return counts

    before = automatic_completed()
    started = timezone.now()
    heartbeat = f"{receiver.url}/ping/noche"
    env = child_environment(CELERY_BROKER_URL=redis_url, JOB_KEY_PREFIX=job_queue, BACKUPS_LOCAL_ROOT=str(worker_backups_dir),
                            BACKUP_HEARTBEAT_URL=heartbeat)
    done = subprocess.run([sys.executable, str(settings.BASE_DIR / "manage.py"), "create_backup", "--all-tenants",
                           "--type", "automatic", "--prune"], env=env, capture_output=True, text=True, timeout=120)
    # then it exits at once, having queued one job per clinic and run none
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(f"{schema}: backup" in done.stdout and "en cola" in done.stdout for schema in before), done.stdout
    assert automatic_completed() == before
    assert receiver.paths() == ["/ping/noche/start"]  # the heartbeat: the night is queued
    # and a worker then makes each clinic's backup
    try:
        with celery_worker(redis_url, job_queue, worker_backups_dir, BACKUP_HEARTBEAT_URL=heartbeat):
            deadline = time.monotonic() + POLL_TIMEOUT
            while any(count <= before[schema] for schema, count in automatic_completed().items()):
                assert time.monotonic() < deadline, automatic_completed()
                time.sleep(0.1)
            # and once the last clinic's job ended, the heartbeat's success, from the worker
            while receiver.paths() == ["/ping/noche/start"]:
                assert time.monotonic() < deadline, receiver.paths()
                time.sleep(0.1)
        assert receiver.paths() == ["/ping/noche/start", "/ping/noche"]
    finally:
        # Committed in clinics that other tests verify: their objects live in this session's folder only.
        for schema in ("test_a", "test_b"):
            with schema_context(schema):
                BackupRecord.objects.filter(backup_type="automatic", file_path__startswith=f"{schema}/automatic/",
                                            created_at__gte=started).delete()


@pytest.mark.parametrize(("broker", "eager"), [("", True), ("redis://127.0.0.1:6379/0", False)])
def test_jobs_run_inline_when_no_broker_is_configured(broker, eager):
    # The embedded default: `make demo` and `make test` need no Redis; a broker switches to workers.
    code = "import django; django.setup(); from django.conf import settings; print(settings.CELERY_TASK_ALWAYS_EAGER)"
    env = child_environment(**({"CELERY_BROKER_URL": broker} if broker else {}))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=settings.BASE_DIR)
    assert done.stdout.strip() == str(eager), done.stderr[-2000:]
