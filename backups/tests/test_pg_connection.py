"""pg_dump and psql connect as Django does: DATABASE_URL's query (sslmode, certificates, options)
reaches them as libpq's variables, the password never in argv."""
from __future__ import annotations

import subprocess

import environ
from django.db import connection

from backups.dump.pg_tools import PgConnectionParams
from backups.services import database_params, pg_binaries


def test_the_ssl_settings_of_database_url_reach_the_clients_environment():
    # given a DATABASE_URL as Render's external connection strings (and a private CA) write it
    url = "postgres://clinicas:s3cr3t@db.example.com:5432/clinicas?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=7"
    settings_dict = environ.Env.db_url_config(url)
    # when the clients' environment is made from it
    env = PgConnectionParams.from_settings(settings_dict).environ()
    # then libpq gets the same demands Django's connection gets
    assert (env["PGSSLMODE"], env["PGSSLROOTCERT"], env["PGCONNECT_TIMEOUT"]) == ("verify-full", "/etc/ca.pem", "7")
    assert (env["PGHOST"], env["PGUSER"], env["PGPASSWORD"], env["PGDATABASE"]) == ("db.example.com", "clinicas", "s3cr3t", "clinicas")


def test_the_clients_get_the_server_options_djangos_connection_has(db):
    # given the project's connection, whose options ask the server to check for vanished clients
    assert "client_connection_check_interval" in connection.settings_dict["OPTIONS"]["options"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW client_connection_check_interval")
        (djangos,) = cursor.fetchone()
    # when psql connects with the clients' environment
    result = subprocess.run([str(pg_binaries().psql), "--no-psqlrc", "-tAc", "SHOW client_connection_check_interval"],
                            env=database_params().environ(), capture_output=True, text=True, timeout=60)
    # then its session has the same setting (a killed pg_dump's backend does not linger either)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == djangos != "0"


def test_a_socket_named_in_database_urls_query_is_where_the_clients_connect_too():
    # given a DATABASE_URL naming its server's Unix socket in the query, as libpq's own URIs do
    settings_dict = environ.Env.db_url_config("postgres://clinicas@/clinicas?host=/run/postgresql&port=5433")
    # when the clients' environment is made from it
    env = PgConnectionParams.from_settings(settings_dict).environ()
    # then pg_dump and psql go to that socket, as Django's connection does, not to libpq's default
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"]) == ("/run/postgresql", "5433", "clinicas", "clinicas")


def test_host_and_port_set_outside_the_query_win_as_in_djangos_connection():
    settings_dict = {"NAME": "clinicas", "USER": "u", "PASSWORD": "", "HOST": "db.example.com", "PORT": "5432",
                     "OPTIONS": {"host": "/run/postgresql", "port": "5433"}}
    env = PgConnectionParams.from_settings(settings_dict).environ()
    assert (env["PGHOST"], env["PGPORT"]) == ("db.example.com", "5432")
