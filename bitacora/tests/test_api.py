import pytest

from bitacora.services import AuditContext, record


@pytest.mark.parametrize("rol", ["admin", "propietario"])
def test_admin_and_owner_read_the_audit_log_newest_first(client_for, tenant_a, rol):
    # given two entries
    record(context=AuditContext.system("prueba"), action="prueba.primera")
    record(context=AuditContext.system("prueba"), action="prueba.segunda")
    # when
    response = client_for("test_a", rol).get("/api/bitacora/?limit=500")
    # then
    assert response.status_code == 200
    actions = [entry["action"] for entry in response.json()["results"]]
    assert actions.index("prueba.segunda") < actions.index("prueba.primera")


@pytest.mark.parametrize("rol", ["odontologo", "recepcion"])
def test_staff_roles_get_403(client_for, rol):
    response = client_for("test_a", rol).get("/api/bitacora/")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_filters_by_action_and_date_and_paginates(client_for, tenant_a):
    for _ in range(3):
        record(context=AuditContext.system("prueba"), action="prueba.filtro")
    client = client_for("test_a", "admin")
    response = client.get("/api/bitacora/", {"action": "prueba.filtro", "limit": 2})
    body = response.json()
    assert body["count"] >= 3 and len(body["results"]) == 2
    assert {entry["action"] for entry in body["results"]} == {"prueba.filtro"}
    response = client.get("/api/bitacora/", {"action": "prueba.filtro", "hasta": "2000-01-01"})
    assert response.json()["count"] == 0
    response = client.get("/api/bitacora/", {"desde": "no-es-fecha"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_the_api_has_no_way_to_change_entries(client_for, tenant_a):
    client = client_for("test_a", "admin")
    assert client.delete("/api/bitacora/").status_code == 405
    assert client.post("/api/bitacora/", {}, content_type="application/json").status_code == 405


@pytest.mark.parametrize("query", ["limit=1000000000", "limit=501", "limit=0", "limit=-1", "limit=abc", "offset=-1", "offset=abc"])
def test_a_page_out_of_bounds_or_malformed_is_a_400(client_for, query):
    # when the audit log is asked for an unbounded or malformed page
    response = client_for("test_a", "admin").get(f"/api/bitacora/?{query}")
    # then it is refused, in the common error shape, naming the parameter
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and body["success"] is False
    assert set(body["details"]["fields"]) == {query.split("=")[0]}


def test_the_largest_page_is_500_entries(client_for, tenant_a):
    response = client_for("test_a", "admin").get("/api/bitacora/?limit=500&offset=0")
    assert response.status_code == 200
