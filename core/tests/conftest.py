"""The project as an operator and a browser meet it: `make demo`'s clinics in a database of
their own, `python manage.py …` in subprocesses, and gunicorn serving them.

Everything here is committed data (a subprocess sees nothing of a test's transaction), so
it lives in a scratch database on the test server, made once per session and dropped
afterwards: the suite's own clinics and tests never see it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from django.conf import settings

from core.testing import database_url, scratch_database, sql_rows

BASE_DIR = Path(settings.BASE_DIR)
DEMO_PASSWORD = "demo12345"  # seed_demo's default, as in the README


@dataclass
class DemoSite:
    """A database seeded by `seed_demo` (clinica_demo, clinica_norte, the platform operator)."""

    database: str
    env: dict[str, str]

    def manage(self, *args: str, stdin: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """`python manage.py <args>` against this database, as an operator runs it."""
        return self.run([sys.executable, "manage.py", *args], stdin=stdin, check=check)

    def run(self, command: list[str] | str, *, stdin: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=BASE_DIR, env=self.env, input=stdin, capture_output=True, text=True,
                                shell=isinstance(command, str), timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        return sql_rows(self.database, query, params)


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory) -> DemoSite:
    folder = tmp_path_factory.mktemp("demo")
    with scratch_database() as name:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "core.test_settings",
            "DATABASE_URL": database_url(name),
            "BACKUPS_LOCAL_ROOT": str(folder / "backups"),
            "BACKUP_TEMP_DIR": str(folder / "tmp"),
            "MEDIA_ROOT": str(folder / "media"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.pop("DEBUG", None)
        if settings.PG_BIN_DIR:
            env["PG_BIN_DIR"] = str(settings.PG_BIN_DIR)
        site = DemoSite(name, env)
        site.manage("migrate_schemas", "--shared", "--noinput", check=True)
        site.manage("seed_demo", "--scale", "0.01", check=True)
        yield site


@contextmanager
def gunicorn_serving(site: DemoSite, **env: str | None) -> Iterator[str]:
    """gunicorn serving the demo database, with `env` changed in its environment (None: removed); its base URL.

    The listening socket is made here and handed to gunicorn (`--bind fd://N`): a client
    may connect at once, its connection waits in the backlog until gunicorn accepts it,
    so nothing polls or sleeps for the server to come up.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "core.wsgi:application", "--bind", f"fd://{listener.fileno()}",
         "--workers", "1", "--threads", "4", "--timeout", "120", "--log-level", "warning"],
        cwd=BASE_DIR, env={name: value for name, value in {**site.env, **env}.items() if value is not None},
        pass_fds=(listener.fileno(),),
    )
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        listener.close()


@pytest.fixture(scope="session")
def demo_server(demo_site) -> str:
    """gunicorn serving the demo database; its base URL."""
    with gunicorn_serving(demo_site) as url:
        yield url
