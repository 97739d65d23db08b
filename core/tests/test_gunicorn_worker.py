"""The web server as Render runs it (render.yaml's startCommand and gunicorn.conf.py): connections
that are held open, idle or with half a request, never freeze it (issue 18)."""
from __future__ import annotations

import http.client
import json
import shlex
import socket
import subprocess
import time
from contextlib import ExitStack, closing
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from core.testing import child_environment, gunicorn_as_deployed, render_web_command

# More of each kind than workers × threads (2 × 8), so each kind alone would hold every thread.
HELD_PER_KIND = 24
HEALTH = b"GET /api/health/ HTTP/1.1\r\nHost: localhost\r\n"
# A request whose body the app reads (a login in clinic test_a): stock gthread's thread waits for all of it.
LOGIN = b"POST /api/auth/token/ HTTP/1.1\r\nHost: localhost\r\nX-Tenant-ID: test_a\r\nContent-Type: application/json\r\n"


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _get(url: str, path: str, *, timeout: float) -> tuple[int, bytes]:
    host, port = _address(url)
    with closing(http.client.HTTPConnection(host, port, timeout=timeout)) as connection:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()


def _booted(url: str) -> None:
    """The first answer: the connection waits in the backlog while the workers boot."""
    assert _get(url, "/api/health/", timeout=60) == (200, b'{"status":"ok"}')


def _held(stack: ExitStack, url: str, payload: bytes) -> socket.socket:
    sock = stack.enter_context(socket.create_connection(_address(url), timeout=5))
    if payload:
        sock.sendall(payload)
    return sock


def _held_connections(stack: ExitStack, url: str) -> list[socket.socket]:
    """Idle ones, half a head, a small body half sent, a large body (past memory, into a file) half sent."""
    kinds = [
        b"",
        HEALTH,
        LOGIN + b'Content-Length: 100\r\n\r\n{"email": ',
        LOGIN + b"Content-Length: 10000000\r\n\r\n" + b" " * (200 * 1024),
    ]
    return [_held(stack, url, payload) for _ in range(HELD_PER_KIND) for payload in kinds]


def _closed_by_server(sock: socket.socket, *, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def server_env(tenants, tmp_path):
    return child_environment(BACKUP_TEMP_DIR=str(tmp_path / "tmp"), MEDIA_ROOT=str(tmp_path / "media"),
                             BACKUPS_LOCAL_ROOT=str(tmp_path / "backups"))


def test_held_open_connections_do_not_freeze_the_health_check(server_env):
    # given the server as deployed, and many connections held open: idle, or with half a request
    with gunicorn_as_deployed(server_env) as url, ExitStack() as stack:
        _booted(url)
        held = _held_connections(stack, url)
        assert len(held) == 4 * HELD_PER_KIND
        # when the health check asks, then it is answered at once
        started = time.monotonic()
        assert _get(url, "/api/health/", timeout=5) == (200, b'{"status":"ok"}')
        assert time.monotonic() - started < 2


def test_a_request_that_does_not_arrive_in_time_is_closed_and_a_slow_steady_one_is_not(server_env):
    # given the server as deployed, with requests given 1 s (plus 1 s per 500 bytes of body)
    with gunicorn_as_deployed({**server_env, "GUNICORN_REQUEST_TIMEOUT": "1"}) as url, ExitStack() as stack:
        _booted(url)
        stalled = [_held(stack, url, payload) for payload in (b"", HEALTH, LOGIN + b'Content-Length: 100\r\n\r\n{"e')]
        steady = _held(stack, url, LOGIN + b"Content-Length: 3000\r\n\r\n")
        # when the steady one sends its body at 1,000 bytes a second, for 3 s
        body = json.dumps({"email": "nadie@clinica-a.test", "password": ""}).encode()
        body = body[:-2] + b"x" * (3000 - len(body)) + body[-2:]
        for start in range(0, len(body), 100):
            steady.sendall(body[start:start + 100])
            time.sleep(0.1)
        # then the stalled ones were closed, and the steady one gets its answer
        assert [_closed_by_server(sock, within=3) for sock in stalled] == [True, True, True]
        steady.settimeout(10)
        assert steady.recv(1024).startswith(b"HTTP/1.1 401 ")  # the app read it all: wrong credentials


def test_an_upload_that_expects_100_continue_gets_one_and_its_answer_and_the_connection_serves_again(server_env):
    # given a request of 200 kB (past what is kept in memory) that waits for 100 Continue
    body = b'{"email": "' + b"a" * (200 * 1024) + b'", "password": "x"}'
    with gunicorn_as_deployed(server_env) as url, closing(socket.create_connection(_address(url), timeout=10)) as sock:
        _booted(url)
        sock.sendall(LOGIN + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        # when it gets its 100 and sends its body
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        # then the app reads it and answers (wrong credentials), after no second 100
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 401 and json.loads(answer.read())["code"] == "authentication_failed"
        # and the kept-alive connection serves the next request
        sock.sendall(HEALTH + b"\r\n")
        again = http.client.HTTPResponse(sock)
        again.begin()
        assert (again.status, again.read()) == (200, b'{"status":"ok"}')


def test_make_demo_serves_with_the_command_render_runs():
    # `make serve` (the end of `make demo`) runs render.yaml's command, on this machine's address
    # --no-print-directory: under `make test` this make is a sub-make, which would print where it is
    printed = subprocess.run(["make", "--no-print-directory", "-n", "serve", "PY=python"], cwd=settings.BASE_DIR, capture_output=True,
                             text=True, check=True).stdout.strip()
    words = shlex.split(printed)
    assert words[:3] == ["DEBUG=1", "python", "-m"]
    assert words[3:-2] == render_web_command()
    assert words[-2] == "--bind" and words[-1].startswith("127.0.0.1:")
