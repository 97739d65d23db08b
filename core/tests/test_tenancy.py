import pytest

from core.models import Tenant


def test_header_selects_the_clinic_by_schema_name(client_for):
    # given a logged-in admin of clinic A
    client = client_for("test_a", "admin")
    # when / then
    response = client.get("/api/auth/me/")
    assert response.status_code == 200
    assert response.json()["email"] == "admin@clinica-a.test"


def test_header_selects_the_clinic_by_slug(client_for, tenants):
    client = client_for("test_a", "admin")
    response = client.get("/api/auth/me/", HTTP_X_TENANT_ID="clinica-a")
    assert response.status_code == 200


def test_x_tenant_header_is_accepted_too(client, tenants):
    response = client.post(
        "/api/auth/token/",
        {"email": "admin@clinica-b.test", "password": "clave-de-prueba-123"},
        content_type="application/json",
        HTTP_X_TENANT="test_b",
    )
    assert response.status_code == 200


def test_host_name_selects_the_clinic_without_header(client, tenants):
    response = client.post(
        "/api/auth/token/",
        {"email": "admin@clinica-b.test", "password": "clave-de-prueba-123"},
        content_type="application/json",
        HTTP_HOST="clinica-b.localhost",
    )
    assert response.status_code == 200


@pytest.mark.parametrize("requested", ["no_existe", "public", "PUBLIC ", "clinica-inexistente"])
def test_unknown_or_public_tenant_is_a_json_404(client, tenants, requested):
    response = client.get("/api/auth/me/", HTTP_X_TENANT_ID=requested)
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False
    assert body["code"] == "tenant_not_found"
    assert body["message"]


def test_inactive_tenant_is_a_json_404(client, tenants):
    # given clinic B deactivated (the test transaction rolls it back)
    Tenant.objects.filter(schema_name="test_b").update(is_active=False)
    # when
    response = client.get("/api/auth/me/", HTTP_X_TENANT_ID="test_b")
    # then
    assert response.status_code == 404
    assert response.json()["code"] == "tenant_not_found"


def test_unknown_url_is_a_json_404(client_for):
    response = client_for("test_a", "admin").get("/api/no-existe/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_clinic_operation_without_a_clinic_is_a_json_401_and_the_platform_needs_none(client, tenants):
    # given no X-Tenant-ID, on a host that is no clinic's, outside /clinicas/<slug>/
    for method, path in [("get", "/api/auth/me/"), ("post", "/api/auth/token/"), ("get", "/api/backups/history/"),
                         ("post", "/api/restore/")]:
        response = getattr(client, method)(path)
        # then a clinic's operation asks for the clinic, as a missing credential
        assert response.status_code == 401, path
        assert response.json()["code"] == "tenant_required"
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    # and the platform's paths answer as ever
    assert client.get("/api/health/").status_code == 200
    assert client.get("/api/schema/", HTTP_ACCEPT="application/json").status_code == 200
    unknown = client.get("/api/no-existe/")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"


def test_health_checks_the_database(client, tenants):
    response = client.get("/api/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_schema_describes_the_tenant_bound_jwt(client_for):
    response = client_for("test_a").get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["tenantJWT"]["scheme"] == "bearer"
    # the clinic is a header every clinic operation requires (an unknown one is a 404, not a bad key)
    me = schema["paths"]["/api/auth/me/"]["get"]
    assert me["security"] == [{"tenantJWT": []}]
    assert [(p["in"], p["name"], p["required"]) for p in me["parameters"]] == [("header", "X-Tenant-ID", True)]


def test_cors_preflight_from_an_allowed_origin_allows_the_tenant_header(client, tenants, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.clinica.test"]
    response = client.options(
        "/api/backups/history/",
        HTTP_ORIGIN="https://app.clinica.test",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, x-tenant-id, x-tenant",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "https://app.clinica.test"
    allowed = response["Access-Control-Allow-Headers"].lower()
    assert "x-tenant-id" in allowed and "x-tenant" in allowed and "authorization" in allowed


def test_cors_preflight_from_an_unlisted_origin_is_not_allowed(client, tenants, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.clinica.test"]
    response = client.options(
        "/api/backups/history/",
        HTTP_ORIGIN="https://evil.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="x-tenant-id",
    )
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.parametrize("headers", [{}, {"HTTP_X_TENANT_ID": "test_a"}])
def test_a_host_outside_allowed_hosts_gets_a_json_400(client, tenants, headers):
    response = client.get("/api/health/", HTTP_HOST="evil.example", **headers)
    assert response.status_code == 400
    assert response.json()["code"] == "host_not_allowed"
