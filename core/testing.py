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
