"""As deployed on Render: the web service and the worker on two machines that share only
PostgreSQL, Redis and object storage (the local Supabase protocol server, with the clinic's
files in their own bucket). Each box has its own disk (its own var/: temporary files, the
structure cache, a media folder nobody should need), and a deploy gives the web a new one.

A backup made by the worker must hold every radiograph the web's users uploaded; after a
deploy of the web, a restore through the API must bring back one deleted meanwhile.
"""
from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from django.conf import settings
from django.core.files.storage import storages

from backups.restore import CARRIED_MODELS
from backups.tests.conftest import MEDIA_BUCKET
from backups.tests.test_worker import celery_worker, job_queue, redis_url  # noqa: F401 - fixtures
from clinica.models import Radiografia
from conftest import TEST_PASSWORD
from core.testing import child_environment, committed_tables

pytestmark = pytest.mark.committed
SCHEMA = "test_restore"
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)
POLL_SECONDS = 120


def _box_env(box: Path, supabase) -> dict[str, str]:
    """One machine's settings: the shared object storage, and everything local under its own folder
    (the broker's settings are celery_worker's, and the web's below)."""
    return {
        "SUPABASE_URL": supabase.url, "SUPABASE_KEY": supabase.key,
        "SUPABASE_BUCKET": "backups", "SUPABASE_MEDIA_BUCKET": MEDIA_BUCKET,
        "MEDIA_ROOT": str(box / "media"),
        "BACKUP_TEMP_DIR": str(box / "tmp"), "BACKUP_STRUCTURE_CACHE_DIR": str(box / "cache"),
        "JOB_WAIT_SECONDS": "0",
        # Sealed, as in production; the test suite's platform identity plays the environment's secret.
        "BACKUP_ENCRYPTION": "on", "BACKUP_PLATFORM_IDENTITY": Path(settings.BACKUP_PLATFORM_IDENTITY_FILE).read_text(),
    }


@contextmanager
def web_box(env: dict[str, str], redis: str, queue: str) -> Iterator[httpx.Client]:
    """The web service (gunicorn as render.yaml starts it), logged in as the clinic's admin."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "core.wsgi:application", "-c", "gunicorn.conf.py",
         "--bind", f"fd://{listener.fileno()}", "--workers", "1", "--log-level", "warning"],
        cwd=settings.BASE_DIR, env=child_environment(**env, CELERY_BROKER_URL=redis, JOB_KEY_PREFIX=queue,
                                                     BACKUPS_LOCAL_ROOT=str(Path(env["MEDIA_ROOT"]).parent / "backups")),
        pass_fds=(listener.fileno(),),
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=60,
                          headers={"X-Tenant-ID": SCHEMA}) as client:
            login = client.post("/api/auth/token/", json={"email": "admin@clinica-r.test", "password": TEST_PASSWORD})
            assert login.status_code == 200, login.text
            client.headers["Authorization"] = f"Bearer {login.json()['access']}"
            yield client
    finally:
        server.terminate()
        server.wait(timeout=30)
        listener.close()


def _settled(client: httpx.Client, url: str) -> dict:
    deadline = time.monotonic() + POLL_SECONDS
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["status"] not in ("pending", "running"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"{url} still running after {POLL_SECONDS} s: {body}")


def _media_hashes() -> dict[str, str]:
    media = storages["default"]
    hashes = {}
    for path in Radiografia.objects.exclude(archivo="").values_list("archivo", flat=True).distinct():
        with media.open(path) as stored:
            hashes[path] = hashlib.sha256(stored.read()).hexdigest()
    return hashes


def test_the_worker_backs_up_every_radiograph_and_a_restore_after_a_deploy_brings_one_back(
    committed_db, supabase_media, media_files, redis_url, job_queue, tmp_path,  # noqa: F811
):
    # given radiographs uploaded to the media bucket, and two boxes sharing only the services
    media_files(count=3)
    files_at_backup = _media_hashes()
    rows_at_backup = committed_tables(SCHEMA, exclude=CARRIED)
    web, worker = tmp_path / "web", tmp_path / "worker"
    worker.mkdir()
    with celery_worker(redis_url, job_queue, worker / "backups", **_box_env(worker, supabase_media)):
        # when the web service asks for a backup, which the worker makes
        with web_box(_box_env(web, supabase_media), redis_url, job_queue) as client:
            created = client.post("/api/backups/create/", json={"backup_type": "manual"})
            assert created.status_code == 202, created.text
            backup = _settled(client, created.headers["Location"])
        # then it holds every radiograph, with no warning
        assert backup["status"] == "completed", backup
        assert (backup["files_count"], backup["warnings"]) == (len(files_at_backup), [])
        assert backup["manifest"]["encryption"]["key_id"]
        # and after a deploy (the web's disk replaced) and a radiograph lost meanwhile
        shutil.rmtree(web, ignore_errors=True)  # whatever the web wrote on its disk, if anything
        lost = sorted(files_at_backup)[0]
        storages["default"].delete(lost)
        Radiografia.objects.filter(archivo=lost).update(descripcion="cambiada tras el backup")
        with web_box(_box_env(web, supabase_media), redis_url, job_queue) as client:
            started = client.post(f"/api/backups/history/{backup['id']}/restore/", json={"confirm": SCHEMA})
            assert started.status_code == 202, started.text
            restore = _settled(client, started.headers["Location"])
    # then the restore, made by the worker, brought every row and every file back
    assert restore["status"] == "completed", restore
    assert committed_tables(SCHEMA, exclude=CARRIED) == rows_at_backup
    assert _media_hashes() == files_at_backup
