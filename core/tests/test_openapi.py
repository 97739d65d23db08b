"""The OpenAPI schema says what the API does: error answers, pagination, binary downloads,
202s; a bounded schemathesis run finds no 5xx and no answer the schema does not describe; and
schemathesis's own command line, with every check, finds nothing against the real server."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import schemathesis
from django.conf import settings
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backups.tests.conftest import backups_dir  # noqa: F401 - a fixture: backups stored in the test's own folder
from core.testing import child_environment, committed_tables, database_url, gunicorn_as_deployed, scratch_database

ERROR = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def api_schema() -> dict:
    return SchemaGenerator(urlconf="core.urls_tenant").get_schema(request=None, public=True)


def _error_statuses(operation: dict) -> set[str]:
    return {status for status, answer in operation["responses"].items()
            if answer.get("content", {}).get("application/json", {}).get("schema") == ERROR}


def test_every_operation_documents_its_error_answers_in_the_error_shape(api_schema):
    paths = api_schema["paths"]
    # every operation: an unknown clinic or id; with a token: a bad token; with a role check: 403
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert "404" in _error_statuses(operation), (method, path)
            if path != "/api/health/":
                assert "401" in _error_statuses(operation), (method, path)
    # a body: 400 and 415; uploads: 413; conflicts: 409
    assert {"400", "401", "403", "404", "409", "413", "415"} <= _error_statuses(paths["/api/restore/"]["post"])
    assert {"400", "401", "403", "404", "409", "415"} <= _error_statuses(paths["/api/backups/create/"]["post"])
    assert {"400", "415"} <= _error_statuses(paths["/api/backups/history/{backup_id}/"]["patch"])
    assert {"409"} <= _error_statuses(paths["/api/backup/"]["get"])
    assert {"429"} <= _error_statuses(paths["/api/auth/token/"]["post"])
    assert set(api_schema["components"]["schemas"]["Error"]["required"]) == {"success", "code", "message", "details"}


def test_the_history_is_an_array_without_limit_and_a_page_with_it(api_schema):
    schema = api_schema["paths"]["/api/backups/history/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    array, page = schema["oneOf"]
    assert array["type"] == "array" and array["items"] == {"$ref": "#/components/schemas/BackupRecord"}
    assert page["type"] == "object" and set(page["required"]) == {"count", "results"}


def test_downloads_are_binary_and_jobs_answer_202_with_a_location(api_schema):
    paths = api_schema["paths"]
    download = paths["/api/backups/history/{backup_id}/download/"]["get"]["responses"]["200"]
    # the SQL by default, the stored .sql.gz on request (issue 11); both binary
    assert download["content"] == {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                                   "application/gzip": {"schema": {"type": "string", "format": "binary"}}}
    assert "X-Checksum-SHA256" in download["headers"]
    export = paths["/api/backup/"]["get"]["responses"]["200"]["content"]
    assert set(export) == {"application/json", "application/gzip"}
    assert export["application/gzip"]["schema"] == {"type": "string", "format": "binary"}
    assert "data" in export["application/json"]["schema"]["required"]  # the backup document itself
    for path in ("/api/backups/create/", "/api/backups/history/{backup_id}/restore/"):
        accepted = paths[path]["post"]["responses"]["202"]
        assert accepted["headers"]["Location"]["required"] is True
        assert "$ref" in accepted["content"]["application/json"]["schema"]


def _body_schema(api_schema: dict, path: str, method: str, media_type: str = "application/json") -> dict:
    reference = api_schema["paths"][path][method]["requestBody"]["content"][media_type]["schema"]["$ref"]
    return api_schema["components"]["schemas"][reference.rsplit("/", 1)[1]]


def _answer_schema(api_schema: dict, path: str) -> dict:
    reference = api_schema["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    return api_schema["components"]["schemas"][reference.rsplit("/", 1)[1]]


def _admits(field: dict, value: str) -> bool:
    """Whether a string field's schema admits a value (its length and pattern)."""
    return len(value) >= field.get("minLength", 0) and re.search(field.get("pattern", ""), value) is not None


def test_request_schemas_refuse_what_the_server_refuses(api_schema):
    # blank, or only whitespace (DRF trims it away), or with a NUL: refused by DRF, and by the schema
    login = _body_schema(api_schema, "/api/auth/token/", "post")["properties"]
    refresh = _body_schema(api_schema, "/api/auth/token/refresh/", "post")["properties"]
    confirm = _body_schema(api_schema, "/api/backups/history/{backup_id}/restore/", "post")["properties"]
    for field in (login["email"], login["password"], refresh["refresh"], confirm["confirm"]):
        assert [_admits(field, value) for value in ("", " ", "\x1e\u3000", "a\x00b", " a ", "clinica_a")] == [
            False, False, False, False, True, True], field
    # PATCH requires keep, as the view does
    assert _body_schema(api_schema, "/api/backups/history/{backup_id}/", "patch")["required"] == ["keep"]
    # the JSON restore takes a file, in multipart only; creating a backup takes JSON only
    upload = api_schema["paths"]["/api/restore/"]["post"]["requestBody"]["content"]
    assert set(upload) == {"multipart/form-data"}
    assert upload["multipart/form-data"]["encoding"] == {"backup_file": {"contentType": "application/json, application/gzip"}}
    backup_file = _body_schema(api_schema, "/api/restore/", "post", "multipart/form-data")["properties"]["backup_file"]
    assert backup_file == {"type": "string", "format": "binary"}
    assert set(api_schema["paths"]["/api/backups/create/"]["post"]["requestBody"]["content"]) == {"application/json"}


def test_the_clinic_header_is_a_required_parameter_of_every_clinic_operation(api_schema):
    for path, operations in api_schema["paths"].items():
        for method, operation in operations.items():
            headers = [p for p in operation.get("parameters", []) if p["in"] == "header" and p["name"] == "X-Tenant-ID"]
            if path == "/api/health/":
                assert headers == [], (method, path)
            else:
                assert [p["required"] for p in headers] == [True], (method, path)
                assert "401" in _error_statuses(operation), (method, path)  # what a request without it gets
            # an optional query parameter sent empty is one not sent, for DRF
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    assert parameter["allowEmptyValue"] is True and "minLength" not in parameter["schema"], parameter
    assert "tenantHeader" not in api_schema["components"]["securitySchemes"]


def test_token_answers_are_described(api_schema):
    pair = _answer_schema(api_schema, "/api/auth/token/")
    assert set(pair["required"]) == {"access", "refresh"}
    assert _answer_schema(api_schema, "/api/auth/token/refresh/")["required"] == ["access"]  # refresh tokens are not rotated
    assert "security" not in api_schema["paths"]["/api/auth/token/"]["post"]  # a login needs no token


def test_the_schema_served_for_a_clinic_gives_the_one_confirmation_it_takes(client_for, client):
    def confirm(response):
        schemas = response.json()["components"]["schemas"]
        field = schemas["BackupRestoreRequest"]["properties"]["confirm"]
        return schemas[field["allOf"][0]["$ref"].rsplit("/", 1)[1]]["enum"] if "allOf" in field else None

    assert confirm(client_for("test_a").get("/api/schema/", HTTP_ACCEPT="application/json")) == ["test_a"]
    assert confirm(client.get("/api/schema/", HTTP_ACCEPT="application/json")) is None  # the platform's: any clinic


# The SQL restore replaces the clinic's schema by psql in other sessions and renames schemas:
# it cannot run inside the test's transaction, so the run leaves it out (its own tests drill it).
LEFT_OUT = {("POST", "/api/backups/history/{backup_id}/restore/")}
EXAMPLES_PER_OPERATION = 20


@contextmanager
def _inside_the_test_transaction():
    """Django's WSGI handler closes the connection after each request unless told otherwise,
    as the test client is: so every request runs inside the test's transaction, rolled back."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def test_a_bounded_schemathesis_run_finds_no_5xx_and_no_answer_the_schema_does_not_describe(
    api_schema, tenant_a, client_for, backups_dir
):
    # given the schema, an admin of clinic A, and the WSGI app in-process
    schema = schemathesis.openapi.from_dict(api_schema)
    headers = {"Authorization": f"Bearer {client_for('test_a', 'admin').tokens['access']}", "X-Tenant-ID": "test_a"}
    app = WSGIHandler()
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              response_headers_conformance]
    committed_before = committed_tables("test_a", exclude=("bitacora_bitacora",))
    operations = [result.ok() for result in schema.get_all_operations()]
    run = [op for op in operations if (op.method.upper(), op.path) not in LEFT_OUT]
    assert len(run) == len(operations) - len(LEFT_OUT) >= 14

    # when each operation gets a few examples, deterministically (all rolled back with the test)
    try:
        with _inside_the_test_transaction():
            for operation in run:
                @given(case=operation.as_strategy(headers=headers))
                @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
                                     suppress_health_check=list(HealthCheck))
                def check(case):
                    response = case.call(app=app, headers=headers)
                    # then no 5xx, and every answer's status, type, headers and body are as documented
                    case.validate_response(response, checks=checks)

                check()
    finally:
        cache.clear()  # the failed logins it tried would throttle the next tests' logins
    # and the clinic's committed data is as it was (the audit log only grew)
    assert committed_tables("test_a", exclude=("bitacora_bitacora",)) == committed_before


# The command-line run: its own database and clinic, since it creates, deletes and restores that
# clinic's backups (a scratch database the suite's clinics never see), served by gunicorn as
# Render runs it. Every operation is in, the SQL restore too.
CLINIC = "openapi_check"
ADMIN, PASSWORD = "admin@openapi-check.test", "clave-openapi-123"
SETUP = f"""
from django_tenants.utils import schema_context
from core.services import public_tenant_ensure, tenant_ensure
from usuarios.models import Usuario
public_tenant_ensure(domains=["localhost"])
tenant_ensure(schema_name="{CLINIC}", slug="openapi-check", nombre="Clínica OpenAPI", domains=["openapi-check.localhost"])
with schema_context("{CLINIC}"):
    Usuario.objects.create_user("{ADMIN}", "{PASSWORD}", nombre="Admin", apellido="OpenAPI", rol="admin")
"""


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env, check=True,
                   capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def live_clinic_server(tmp_path_factory):
    """gunicorn as deployed, serving one clinic (its admin, and one backup) in a scratch database; its URL."""
    folder = tmp_path_factory.mktemp("openapi-live")
    with scratch_database() as name:
        env = child_environment(DATABASE_URL=database_url(name), BACKUPS_LOCAL_ROOT=str(folder / "backups"),
                                BACKUP_TEMP_DIR=str(folder / "tmp"), MEDIA_ROOT=str(folder / "media"))
        _manage(env, "migrate_schemas", "--shared", "--noinput")
        _manage(env, "shell", "-c", SETUP)
        _manage(env, "create_backup", "--tenant", CLINIC)
        with gunicorn_as_deployed(env) as url:
            yield url


def _access_token(url: str) -> str:
    request = urllib.request.Request(
        f"{url}/api/auth/token/", data=json.dumps({"email": ADMIN, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json", "X-Tenant-ID": CLINIC},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # the first request waits for the workers to boot
        return json.load(response)["access"]


@pytest.mark.no_test_db
def test_schemathesis_with_every_check_finds_nothing_against_the_real_server(live_clinic_server, tmp_path):
    # given the real server, an admin's token and the clinic header
    url = live_clinic_server
    headers = ["-H", f"Authorization: Bearer {_access_token(url)}", "-H", f"X-Tenant-ID: {CLINIC}"]
    har_path = tmp_path / "run.har"
    # when schemathesis's command line runs every check through its coverage and fuzzing phases,
    # bounded and seeded (schemathesis.toml, read from the repository's root, says what the schema cannot)
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/schema/", "--checks", "all",
         "--phases", "examples,coverage,fuzzing", "--max-examples", "5", "--seed", "18", "--workers", "1",
         "--generation-database", "none", "--request-timeout", "60", "--no-color", *headers,
         "--report", "har", "--report-har-path", str(har_path)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=300,
    )
    # then every operation was tested and nothing failed
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert "Selected: 16/16" in run.stdout and "Tested: 16" in run.stdout, run.stdout
    # and the token and the header let it in: the clinic's operations answered with real data
    answered = set()
    for entry in json.loads(har_path.read_text())["log"]["entries"]:
        path = re.sub(r"/\d+/", "/{id}/", urlsplit(entry["request"]["url"]).path)
        if 200 <= entry["response"]["status"] < 300:
            answered.add(f"{entry['request']['method']} {path}")
    assert {"GET /api/auth/me/", "GET /api/backup/", "POST /api/backups/create/", "GET /api/backups/history/",
            "GET /api/backups/history/{id}/", "PATCH /api/backups/history/{id}/", "GET /api/backups/history/{id}/download/",
            "GET /api/bitacora/"} <= answered, sorted(answered)
