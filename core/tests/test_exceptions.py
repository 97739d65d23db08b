"""What error bodies echo and audit entries keep of `details` is bounded; requests past Django's
DATA_UPLOAD_* limits are refused in the same error shape."""
import json
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.exceptions import BadRequest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from core import urls_tenant as tenant_urls
from core.exceptions import DETAILS_MAX_JSON, DETAILS_MAX_STRING, details_bounded
from core.testing import SchemaKeepingClient

LONG = "x" * (DETAILS_MAX_STRING + 10)
CUT = f"{'x' * DETAILS_MAX_STRING}…[+10]"


@pytest.mark.parametrize(
    ("details", "kept"),
    [
        ({"model": "clinica.cita"}, {"model": "clinica.cita"}),
        ({"model": LONG}, {"model": CUT, "truncated": True}),
        ({LONG: 1}, {CUT: 1, "truncated": True}),
        ({"row": {"fields": [LONG, 2]}}, {"row": {"fields": [CUT, 2]}, "truncated": True}),
        ({"rows": list(range(205))}, {"rows": [*range(200), "…[+5]"], "truncated": True}),
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}, {"a": {"b": {"c": {"d": {"e": {"f": "…"}}}}}, "truncated": True}),
        ({"bytes": b"abc", "n": None, "ok": True}, {"bytes": "abc", "n": None, "ok": True}),
        (None, {}),
    ],
)
def test_long_strings_lists_and_nesting_are_cut_and_marked(details, kept):
    assert details_bounded(details) == kept


def test_details_too_big_in_sum_keep_only_a_preview_of_their_json():
    # given many strings each under the limit, together far over the bound
    details = {f"campo_{n}": "y" * DETAILS_MAX_STRING for n in range(150)}
    # when bounded
    kept = details_bounded(details)
    # then what is kept is the start of the JSON text, marked
    assert kept["truncated"] is True and set(kept) == {"truncated", "preview"}
    assert kept["preview"].startswith('{"campo_0": "yyy')
    assert len(json.dumps(kept, ensure_ascii=False)) <= DETAILS_MAX_JSON


def test_a_validation_error_echoing_a_huge_value_is_bounded(client_for):
    # given a field whose error message repeats the value it refused (DRF's ChoiceField)
    response = client_for("test_a", "admin").post(
        "/api/backups/create/", {"backup_type": "z" * 100_000}, content_type="application/json"
    )
    # then the 400 keeps only an excerpt of it
    assert response.status_code == 400
    assert response.json()["details"]["truncated"] is True
    assert len(response.content) < 2048


# Bodies Django refuses by its DATA_UPLOAD_* limits (settings' values, not lowered for the tests):
# in the one error shape with a stable code, whether DRF parses the body or Django does.
MAX_FIELDS = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
MAX_FILES = settings.DATA_UPLOAD_MAX_NUMBER_FILES
MAX_BYTES = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
URLENCODED = "application/x-www-form-urlencoded"


def _assert_refused(response, status: int, code: str, details: dict) -> None:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"success": False, "code": code, "message": REFUSALS[code], "details": details}


REFUSALS = {
    "too_many_fields": "La petición tiene demasiados campos.",
    "too_many_files": "La petición tiene demasiados archivos.",
    "request_too_large": "La petición supera el tamaño máximo permitido.",
}


def _fields(count: int) -> dict:
    return {f"campo{n}": "x" for n in range(count)}


def test_a_urlencoded_body_with_too_many_fields_is_a_400_in_the_error_shape(client_for, caplog):
    body = urlencode(_fields(MAX_FIELDS + 1))
    response = client_for("test_a").post("/api/auth/token/", body, content_type=URLENCODED)
    _assert_refused(response, 400, "too_many_fields", {"max_fields": MAX_FIELDS})
    # and, answered by DRF's handler rather than Django's, it is still logged where Django logs it
    assert [record.levelname for record in caplog.records if record.name == "django.security.TooManyFieldsSent"] == ["ERROR"]


def test_a_multipart_body_with_too_many_fields_is_a_400_in_the_error_shape(client_for):
    response = client_for("test_a", "admin").post("/api/restore/", _fields(MAX_FIELDS + 1))
    _assert_refused(response, 400, "too_many_fields", {"max_fields": MAX_FIELDS})


def test_a_query_string_with_too_many_fields_is_a_400_in_the_error_shape(client_for):
    response = client_for("test_a", "admin").get(f"/api/bitacora/?{urlencode(_fields(MAX_FIELDS + 1))}")
    _assert_refused(response, 400, "too_many_fields", {"max_fields": MAX_FIELDS})


def test_a_multipart_body_with_too_many_files_is_a_400_in_the_error_shape(client_for):
    files = [SimpleUploadedFile(f"copia{n}.json", b"{}", content_type="application/json") for n in range(MAX_FILES + 1)]
    response = client_for("test_a", "admin").post("/api/restore/", {"backup_file": files})
    _assert_refused(response, 400, "too_many_files", {"max_files": MAX_FILES})


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", json.dumps({"email": "x" * MAX_BYTES, "password": "x"})),
        (URLENCODED, urlencode({"email": "x" * MAX_BYTES, "password": "x"})),
    ],
    ids=["json", "urlencoded"],
)
def test_a_body_over_the_memory_limit_is_a_413_in_the_error_shape(client_for, content_type, body):
    response = client_for("test_a").post("/api/auth/token/", body, content_type=content_type)
    _assert_refused(response, 413, "request_too_large", {"max_bytes": MAX_BYTES})


def test_multipart_fields_over_the_memory_limit_are_a_413_in_the_error_shape(client_for):
    # files do not count against DATA_UPLOAD_MAX_MEMORY_SIZE (the restore has its own limit); the other fields do
    response = client_for("test_a", "admin").post("/api/restore/", {"replace": "x" * (MAX_BYTES + 1)})
    _assert_refused(response, 413, "request_too_large", {"max_bytes": MAX_BYTES})


def test_the_refusal_follows_accept_language(client_for):
    body = urlencode(_fields(MAX_FIELDS + 1))
    response = client_for("test_a").post("/api/auth/token/", body, content_type=URLENCODED, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 400 and response.json()["message"] == "The request has too many fields."


@csrf_exempt
def _plain_form(request):
    """A view of Django's own, not DRF's, that reads its form."""
    return JsonResponse({"fields": len(request.POST), "files": len(request.FILES)})


def _plain_protected(request):
    """A CSRF-protected view that never reads the form: CsrfViewMiddleware reads it, before the view."""
    return JsonResponse({})


@csrf_exempt
def _plain_bad_request(request):
    raise BadRequest("una petición que esta vista no entiende")


# This module as the URLConf of the tests below: the project's (its error handlers too), plus plain views under /api/.
urlpatterns = [
    path("api/plain/", _plain_form),
    path("api/plain-protected/", _plain_protected),
    path("api/plain-bad-request/", _plain_bad_request),
    *tenant_urls.urlpatterns,
]
handler400 = getattr(tenant_urls, "handler400", "django.views.defaults.bad_request")
handler404, handler500 = tenant_urls.handler404, tenant_urls.handler500


def _assert_every_limit_refused(client, path: str) -> None:
    _assert_refused(client.post(path, urlencode(_fields(MAX_FIELDS + 1)), content_type=URLENCODED),
                    400, "too_many_fields", {"max_fields": MAX_FIELDS})
    files = {f"archivo{n}": SimpleUploadedFile(f"a{n}.txt", b"x") for n in range(MAX_FILES + 1)}
    _assert_refused(client.post(path, files), 400, "too_many_files", {"max_files": MAX_FILES})
    _assert_refused(client.post(path, urlencode({"campo": "x" * MAX_BYTES}), content_type=URLENCODED),
                    413, "request_too_large", {"max_bytes": MAX_BYTES})


@pytest.mark.urls(__name__)
def test_a_view_that_is_not_drfs_refuses_in_the_error_shape_too(client_for):
    client = client_for("test_a")
    assert client.post("/api/plain/", _fields(3)).json() == {"fields": 3, "files": 0}
    _assert_every_limit_refused(client, "/api/plain/")


@pytest.mark.urls(__name__)
def test_a_middleware_reading_the_form_refuses_in_the_error_shape_too(tenants):
    # CsrfViewMiddleware reads a protected view's form for its token (the test client skips that unless asked)
    client = SchemaKeepingClient(enforce_csrf_checks=True, HTTP_X_TENANT_ID="test_a")
    client.cookies["csrftoken"] = "a" * 32
    assert client.post("/api/plain-protected/", _fields(3)).status_code == 403  # read, and no token in it
    _assert_every_limit_refused(client, "/api/plain-protected/")


@pytest.mark.urls(__name__)
def test_any_other_bad_request_django_answers_is_a_400_in_the_error_shape(client_for):
    response = client_for("test_a").post("/api/plain-bad-request/")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json() == {"success": False, "code": "bad_request", "message": "La petición no es válida.", "details": {}}


def test_the_admin_login_form_refuses_too_many_fields_in_the_error_shape(tenants):
    # the admin is Django's too, and CsrfViewMiddleware reads its form before any view; here a clinic
    # reached by path, whose URLConf is made at run time and takes its handlers from the project's
    response = SchemaKeepingClient().post("/clinicas/clinica-a/admin/login/", _fields(MAX_FIELDS + 1))
    _assert_refused(response, 400, "too_many_fields", {"max_fields": MAX_FIELDS})
