"""Without a worker, cron or operator: after the web process is killed mid-backup or mid-restore,
the clinic's next request puts right what the dead one left, and succeeds.

A real gunicorn serves the test database (jobs inline, as with no broker), its worker is
killed with SIGKILL at a named step (CLINICA_KILL_AT), and a second gunicorn, as after a
restart or a deploy, gets the next request.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest
from django.conf import settings

from backups.models import BackupRecord, RestoreJob
from backups.services import backup_create
from backups.tests.processes import child_environ
from bitacora.services import AuditContext
from conftest import TEST_PASSWORD
from core.faults import KILL_AT_ENV
from core.schemas import operation_schemas_left
from core.testing import committed_tables

pytestmark = pytest.mark.committed
SCHEMA = "test_restore"
HEADERS = {"X-Tenant-ID": SCHEMA}
HISTORY = ("backups_backuprecord", "backups_backupfile", "backups_restorejob", "backups_restorefile", "bitacora_bitacora")


@contextmanager
def web_server(backups_dir, kill_at: str = "") -> Iterator[httpx.Client]:
    """gunicorn (one worker) serving the test database; a client logged in as the clinic's admin."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    env = child_environ(backups_dir=backups_dir, **({KILL_AT_ENV: kill_at} if kill_at else {}))
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "core.wsgi:application", "--bind", f"fd://{listener.fileno()}",
         "--workers", "1", "--timeout", "120", "--graceful-timeout", "5", "--log-level", "warning"],
        cwd=settings.BASE_DIR, env=env, pass_fds=(listener.fileno(),),
    )
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with httpx.Client(base_url=base, headers=HEADERS, timeout=120) as client:
            login = client.post("/api/auth/token/", json={"email": "admin@clinica-r.test", "password": TEST_PASSWORD})
            assert login.status_code == 200, login.text
            client.headers["Authorization"] = f"Bearer {login.json()['access']}"
            yield client
    finally:
        server.terminate()  # a short graceful timeout: a loaded machine must not outwait the test
        server.wait(timeout=60)
        listener.close()


def _killed(client: httpx.Client, method: str, url: str, **kwargs) -> None:
    """The request whose worker dies under it: the connection ends with no answer."""
    with pytest.raises(httpx.HTTPError):
        client.request(method, url, **kwargs)


def test_after_the_web_process_dies_mid_backup_the_next_backup_succeeds(committed_db, backups_dir, media_dir):
    # given a backup whose web process was killed before its upload
    with web_server(backups_dir, kill_at="backup.before_upload") as client:
        _killed(client, "POST", "/api/backups/create/", json={})
    dead = BackupRecord.objects.order_by("-id").first()
    assert dead.status == BackupRecord.Status.RUNNING
    # when the clinic's admin asks for a backup again, with no worker and no reaper run
    with web_server(backups_dir) as client:
        response = client.post("/api/backups/create/", json={})
    # then it succeeds, and the dead one is failed as interrupted with nothing of it stored
    assert response.status_code == 201, response.text
    dead.refresh_from_db()
    assert (dead.status, dead.error_code) == (BackupRecord.Status.FAILED, "interrupted")
    assert not (backups_dir / dead.file_path).exists()


@pytest.mark.parametrize("kill_at", ["restore.after_replay", "restore.files.recorded", "restore.swap_before_commit"])
def test_after_the_web_process_dies_mid_restore_the_clinic_is_as_it_was_and_the_next_request_succeeds(
    committed_db, backups_dir, media_dir, media_files, kill_at
):
    # given a backup, and a restore of it whose web process was killed mid-way
    media_files(count=1)
    backup = backup_create(context=AuditContext.system("prueba-autocuracion"))
    before = committed_tables(SCHEMA, exclude=HISTORY)
    with web_server(backups_dir, kill_at=kill_at) as client:
        _killed(client, "POST", f"/api/backups/history/{backup.pk}/restore/", json={"confirm": SCHEMA})
    assert RestoreJob.objects.filter(status=RestoreJob.Status.RUNNING).exists()
    # when the next request comes, with no worker and no reaper run
    with web_server(backups_dir) as client:
        response = client.post("/api/backups/create/", json={})
    # then it succeeds; the clinic is as it was, the dead restore failed, its schemas gone
    assert response.status_code == 201, response.text
    assert committed_tables(SCHEMA, exclude=HISTORY) == before
    assert not RestoreJob.objects.filter(status=RestoreJob.Status.RUNNING).exists()
    assert operation_schemas_left().get(SCHEMA, []) == []
