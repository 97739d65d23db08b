"""Helpers for tests that look at the database from outside Django's test transaction."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import quote

import psycopg2
from django.db import connection
from django.test import Client


class SchemaKeepingClient(Client):
    """A test client that gives the test back its schema after each request.

    After a request the connection stays in that request's schema (its clinic's, or
    public); the test body then sees the schema it was in before.
    """

    def request(self, **request):
        previous = connection.tenant
        try:
            return super().request(**request)
        finally:
            connection.set_tenant(previous)


@contextmanager
def operation_lock_held_elsewhere(schema_name: str) -> Iterator[None]:
    """Another session holding the clinic's operation lock, as a running backup would."""
    from core.locks import tenant_operation_lock

    other = connection.copy()
    try:
        with tenant_operation_lock(schema_name, on=other):
            yield
    finally:
        other.close()


def _connect(dbname: str | None = None):
    settings = connection.settings_dict
    raw = psycopg2.connect(
        dbname=dbname or settings["NAME"],
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
    )
    raw.autocommit = True
    return raw


def postgres_url(settings: dict, dbname: str) -> str:
    """A DATABASE_URL, as django-environ reads it, for a database on the server that
    Django-style connection settings (HOST, PORT, USER, PASSWORD) point at."""
    user = quote(settings.get("USER") or "", safe="")
    password = f":{quote(settings['PASSWORD'], safe='')}" if settings.get("PASSWORD") else ""
    host, port = settings.get("HOST") or "localhost", settings.get("PORT") or 5432
    if host.startswith("/"):
        # A Unix socket directory (the embedded server's): django-environ reads it from the path.
        return f"postgres://{user}{password}@:{port}/{quote(host, safe='')}/{dbname}"
    return f"postgres://{user}{password}@{host}:{port}/{dbname}"


def database_url(dbname: str) -> str:
    """A DATABASE_URL for another database on the test server, for manage.py or gunicorn in a subprocess."""
    return postgres_url(connection.settings_dict, dbname)


def sql_rows(dbname: str, query: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on another database of the test server (autocommit); its rows, if any."""
    raw = _connect(dbname)
    try:
        with raw.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        raw.close()


@contextmanager
def other_session() -> Iterator:
    """A psycopg2 connection of its own (another backend, as a concurrent request would be), in a transaction."""
    raw = _connect()
    raw.autocommit = False
    try:
        yield raw
    finally:
        raw.close()


def backend_waiting(raw, pid: int) -> bool:
    """Whether backend `pid` waits for a lock right now (seen from another session)."""
    with raw.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted)", [pid])
        return cursor.fetchone()[0]


@contextmanager
def scratch_database() -> Iterator[str]:
    """An empty database on the same server, dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    # The server's maintenance database: the test database may not exist (a session
    # whose tests all run outside it, against scratch databases of their own).
    admin = _connect("postgres")
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def committed_tables(schema: str, *, dbname: str | None = None, exclude: tuple[str, ...] = ()) -> dict[str, list[tuple]]:
    """Every table of a schema, every row, ordered, as committed (seen from a fresh connection)."""
    raw = _connect(dbname)
    try:
        with raw.cursor() as cursor:
            cursor.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY 1",
                [schema],
            )
            tables = [name for (name,) in cursor.fetchall() if name not in exclude]
            rows = {}
            for table in tables:
                cursor.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY 1')
                rows[table] = cursor.fetchall()
            return rows
    finally:
        raw.close()


def committed_sequences(schema: str, *, dbname: str | None = None) -> dict[str, int]:
    raw = _connect(dbname)
    try:
        with raw.cursor() as cursor:
            cursor.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = %s ORDER BY 1", [schema])
            return dict(cursor.fetchall())
    finally:
        raw.close()


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a real child process (manage.py, a Celery worker) that works on
    this test session's database: its own settings, no broker unless given, nothing inherited
    that could point it elsewhere."""
    import os

    from django.conf import settings as django_settings

    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PG", "CELERY_", "REDIS_URL", "CLINICA_KILL_AT", "CLINICA_STOP_AT", "DATABASE_URL",
                                   "SUPABASE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="core.test_settings",
        DATABASE_URL=database_url(connection.settings_dict["NAME"]),
        PG_BIN_DIR=str(django_settings.PG_BIN_DIR or ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_manage(*args: str, timeout: float = 120, **env: str):
    """`python manage.py <args>` in a child process; a SIGKILLed child returns -9."""
    import subprocess
    import sys

    from django.conf import settings as django_settings

    return subprocess.run(
        [sys.executable, str(django_settings.BASE_DIR / "manage.py"), *args],
        env=child_environment(**env), capture_output=True, text=True, timeout=timeout,
    )


def schema_fingerprint(schema: str, *, exclude: tuple[str, ...] = ("bitacora_bitacora",)) -> dict[str, str]:
    """An md5 of each table's rows, and of the schema's constraints and indexes, as the default
    connection sees them (inside a test's transaction too). Equal fingerprints: byte-identical.

    The audit log is left out by default: a refused operation appends to it, on purpose.
    """
    fingerprint = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
            [schema],
        )
        for (table,) in cursor.fetchall():
            if table in exclude:
                continue
            cursor.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM \"{schema}\".\"{table}\" t"
            )
            count, digest = cursor.fetchone()
            fingerprint[f"rows {table}"] = f"{count} {digest}"
        cursor.execute(
            "SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM (SELECT format('%%s %%s %%s %%s %%s', "
            "c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid), c.condeferrable, c.convalidated) AS line "
            "FROM pg_constraint c WHERE c.connamespace = %s::regnamespace) s",
            [f'"{schema}"'],
        )
        fingerprint["constraints"] = cursor.fetchone()[0]
        cursor.execute(
            "SELECT md5(coalesce(string_agg(indexname || ' ' || indexdef, E'\\n' ORDER BY indexname), '')) "
            "FROM pg_indexes WHERE schemaname = %s",
            [schema],
        )
        fingerprint["indexes"] = cursor.fetchone()[0]
    return fingerprint


def render_web_command() -> list[str]:
    """The web service's startCommand in render.yaml, as argv."""
    import shlex

    import yaml
    from django.conf import settings as django_settings

    blueprint = yaml.safe_load((django_settings.BASE_DIR / "render.yaml").read_text())
    web = next(service for service in blueprint["services"] if service["type"] == "web")
    return shlex.split(web["startCommand"])


@contextmanager
def gunicorn_as_deployed(env: dict[str, str]) -> Iterator[str]:
    """gunicorn started as render.yaml's web service starts it (workers, worker class, timeouts:
    its command, and the config file that command reads), listening on a socket made here; its
    base URL. Only the address changes: the command's --bind gives way to that socket's
    (`--bind fd://N`), so a client may connect at once and wait in the backlog, no polling."""
    import socket
    import subprocess
    import sys

    from django.conf import settings as django_settings

    argv, command = [], render_web_command()
    while command:
        word = command.pop(0)
        if word in ("--bind", "-b"):
            command.pop(0)
        elif not word.startswith("--bind="):
            argv.append(word)
    assert argv[0] == "gunicorn", argv
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *argv[1:], "--bind", f"fd://{listener.fileno()}", "--log-level", "warning"],
        cwd=django_settings.BASE_DIR, env=env, pass_fds=(listener.fileno(),),
    )
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        listener.close()
