"""A job sent from a fresh process goes through the configured Celery app (core.celery), which
nothing imports at Django's start any more: the task modules bind their tasks to it. Through
Celery's default app instead, a job would be sent to amqp://localhost with a broker configured,
and not run inline without one."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from django.conf import settings
from django_tenants.utils import schema_context

from backups.models import BackupRecord
from backups.tests.test_worker import redis_url  # noqa: F401 - a fixture: the test Redis, or a clear failure
from core.testing import child_environment

pytestmark = pytest.mark.committed
SCHEMA = "test_restore"
# The web service's path: a backup reserved and its job sent (backups.jobs.enqueue), in a process
# that has set Django up and sent nothing yet.
SEND = f"""
import json, sys
import django
django.setup()
loaded_at_setup = sorted(name for name in ("celery", "core.celery", "backups.tasks") if name in sys.modules)
from django_tenants.utils import schema_context
from backups.jobs.enqueue import backup_enqueue
from bitacora.services import AuditContext
with schema_context({SCHEMA!r}):
    backup = backup_enqueue(context=AuditContext.system("test: a job from a fresh process"))
    backup.refresh_from_db()
from backups.tasks import backup_task
print(json.dumps({{"loaded_at_setup": loaded_at_setup, "id": backup.pk, "status": backup.status,
                  "app": backup_task.app.main, "eager": backup_task.app.conf.task_always_eager}}))
"""


@pytest.fixture
def send(committed_db, tmp_path):
    """Run SEND in a fresh process; what it says. A backup it leaves unfinished is deleted at the end:
    no worker will run it, and the clinic must not stay busy for the next tests."""
    sent = []

    def run(**env: str) -> dict:
        done = subprocess.run([sys.executable, "-c", SEND], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120,
                              env=child_environment(BACKUPS_LOCAL_ROOT=str(tmp_path / "backups"), **env))
        assert done.returncode == 0, done.stderr[-3000:]
        sent.append(json.loads(done.stdout.splitlines()[-1]))
        return sent[-1]

    yield run
    with schema_context(SCHEMA):
        BackupRecord.objects.filter(pk__in=[s["id"] for s in sent]).exclude(status=BackupRecord.Status.COMPLETED).delete()


def test_a_job_sent_without_a_broker_runs_inline_on_the_configured_app(send, tmp_path):
    # when a fresh process with no broker configured starts a backup
    sent = send()
    # then Celery was not loaded at start, and the job ran inline, to its end, on the configured app
    assert sent["loaded_at_setup"] == []
    assert sent["app"] == "clinica" and sent["eager"] is True
    assert sent["status"] == BackupRecord.Status.COMPLETED
    assert (tmp_path / "backups" / BackupRecord.objects.get(pk=sent["id"]).file_path).is_file()


def test_a_job_sent_with_a_broker_reaches_it_with_its_clinic(send, redis_url):  # noqa: F811
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    broker = redis.Redis.from_url(redis_url)
    try:
        # when a fresh process with the test Redis as its broker starts a backup
        sent = send(CELERY_BROKER_URL=redis_url, JOB_KEY_PREFIX=prefix)
        # then Celery was not loaded at start, and the job waits in the configured queue, for its clinic
        assert sent["loaded_at_setup"] == []
        assert sent["app"] == "clinica" and sent["eager"] is False and sent["status"] == BackupRecord.Status.PENDING
        queued = [json.loads(message) for message in broker.lrange(f"{prefix}{settings.CELERY_TASK_DEFAULT_QUEUE}", 0, -1)]
        assert [(m["headers"]["task"], m["headers"]["_schema_name"]) for m in queued] == [("backups.tasks.backup_task", SCHEMA)]
    finally:
        for key in broker.scan_iter(f"{prefix}*"):
            broker.delete(key)
        broker.close()
