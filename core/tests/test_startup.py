"""What a process loads to start (issue 22): Django's start and `manage.py check` leave the job,
object-storage, encryption and HTTP libraries for their first use, even with a broker and
Supabase configured; and the beat schedule, plain data in settings, reaches Celery as crontabs.
How long a start takes is bench/bench_startup.py's business, not a test's."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

pytestmark = pytest.mark.no_test_db

# Loaded where they are used: a job sent, an object stored, a backup sealed, an alert delivered.
FIRST_USE = (
    "celery", "kombu", "billiard", "tenant_schemas_celery", "core.celery", "backups.tasks", "alertas.tasks",
    "supabase", "storage3", "httpx", "pyrage", "rich",
)
# Where the schema is served: not with the URLconf that `check` imports.
SCHEMA_SERVING = ("drf_spectacular.views", "drf_spectacular.generators")
# The API's side, which the web process loads with its URLconf: a command or a worker's start (the
# admin modules, the log formatter) does not need it; with it, restore_backup started in 0.55 s, not 0.33.
API_ONLY = ("backups.views", "backup_restore.views", "rest_framework.views", "rest_framework.serializers",
            "rest_framework.response")


def _environment() -> dict[str, str]:
    """Production settings (core.test_settings makes an age identity at import), with a broker
    and both Supabase buckets configured: nothing of theirs may load at start all the same."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CELERY_", "REDIS_URL", "SUPABASE_", "DJANGO_SETTINGS_MODULE"))}
    env.update(
        DJANGO_SETTINGS_MODULE="core.settings", DEBUG="1", PYTHONUNBUFFERED="1",
        CELERY_BROKER_URL="redis://127.0.0.1:9/0", SUPABASE_URL="http://127.0.0.1:9", SUPABASE_KEY="clave-de-prueba",
        SUPABASE_BUCKET="backups", SUPABASE_MEDIA_BUCKET="media",
    )
    return env


def _loaded(*argv: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules a fresh `python manage.py <argv>` had imported when it exited (sys.modules:
    -X importtime misses what importlib.import_module loads, URLconfs and admin modules among them)."""
    script = ("import atexit, json, runpy, sys\n"
              "atexit.register(lambda: print('MODULES', json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
              f"sys.argv = ['manage.py', *{list(argv)!r}]\n"
              "runpy.run_path('manage.py', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR, env=_environment(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = next(line for line in done.stderr.splitlines() if line.startswith("MODULES "))
    return set(json.loads(report.removeprefix("MODULES "))), done


def test_django_setup_loads_no_job_storage_crypto_or_http_library():
    # when a process sets Django up (a worker, a shell, every manage.py command)
    script = "import django, json, sys; django.setup(); print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR, env=_environment(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    # then Django, the apps and their admin are there, and none of what waits for its first use,
    # nor the API's views and serializers
    assert {"django.contrib.admin", "backups.models", "backups.admin"} <= loaded
    assert sorted(loaded & {*FIRST_USE, *API_ONLY}) == []


def test_manage_py_check_loads_none_of_them_either():
    # when the operator runs `manage.py check` (the URL checks import every view)
    modules, done = _loaded("check")
    # then it passes, having imported the URLconfs and views, and nothing that waits for its first use
    assert "System check identified no issues" in done.stdout
    assert {"core.urls_tenant", "backups.views", "backup_restore.views"} <= modules
    assert sorted(modules & {*FIRST_USE, *SCHEMA_SERVING}) == []


def test_a_command_s_help_loads_none_of_them():
    modules, done = _loaded("create_backup", "--help")
    assert "--all-tenants" in done.stdout
    assert sorted(modules & {*FIRST_USE, *API_ONLY}) == []


def test_the_beat_schedule_reaches_celery_as_seconds_and_crontabs():
    # given the schedule as settings write it (no Celery imported there)
    script = (
        "import json\n"
        "from celery.app.utils import find_app\n"
        "app = find_app('core')\n"  # as `celery -A core beat` finds it
        "print(json.dumps({name: [entry['task'], repr(entry['schedule'])] for name, entry in app.conf.beat_schedule.items()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR, env={**_environment(), "BACKUP_DRILL_HOUR": "4"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    schedule = json.loads(done.stdout.splitlines()[-1])
    # then beat reads seconds as seconds and crontab fields as a crontab
    assert schedule["reap-interrupted-operations"] == ["backups.tasks.reap_task", "900"]
    assert schedule["restore-drills"] == ["backups.tasks.drill_night_task", "<crontab: 0 4 * * * (m/h/dM/MY/d)>"]
    assert schedule["backups-overdue"] == ["backups.tasks.overdue_alert_task", "<crontab: 30 * * * * (m/h/dM/MY/d)>"]
    assert schedule["alerts-flush"] == ["alertas.tasks.alerts_flush_task", "300"]
