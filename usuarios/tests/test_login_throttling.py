"""Failed logins are limited per client address and per account: then 429 with Retry-After."""
import pytest
from django.conf import settings
from django.core.cache import cache
from django_tenants.utils import schema_context

from usuarios.models import Usuario

PASSWORD = "clave-de-prueba-123"  # conftest's TEST_PASSWORD
PER_ACCOUNT = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login_account"].split("/")[0])
PER_IP = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login_ip"].split("/")[0])


@pytest.fixture(autouse=True)
def empty_cache():
    # The counts live in the cache, which outlives a test's transaction.
    cache.clear()
    yield
    cache.clear()


def _login(client, email: str, password: str, ip: str = "10.0.0.1"):
    return client.post("/api/auth/token/", {"email": email, "password": password},
                       content_type="application/json", REMOTE_ADDR=ip)


def test_an_account_is_refused_with_429_after_its_failed_attempts(client_for):
    client = client_for("test_a")
    # given as many wrong passwords for one account as the limit allows, from several addresses
    statuses = [_login(client, "admin@clinica-a.test", "incorrecta", ip=f"10.0.1.{n}").status_code for n in range(PER_ACCOUNT)]
    # when one more attempt comes, even with the right password and in other capitals
    response = _login(client, "Admin@Clinica-A.test ", PASSWORD, ip="10.0.2.1")
    # then the wrong ones were 401 and this one is 429 in the error shape, with when to retry
    assert statuses == [401] * PER_ACCOUNT
    assert response.status_code == 429
    body = response.json()
    assert body["success"] is False and body["code"] == "throttled"
    assert body["message"] == "Demasiados intentos fallidos de inicio de sesión. Espere antes de volver a intentarlo."
    assert 0 < int(response["Retry-After"]) <= 3600 and body["details"]["retry_after"] == int(response["Retry-After"])


def test_a_locked_account_leaves_other_accounts_and_clinics_alone(client_for):
    # given one account of clinic A locked by failures
    client = client_for("test_a")
    for _ in range(PER_ACCOUNT):
        _login(client, "admin@clinica-a.test", "incorrecta")
    assert _login(client, "admin@clinica-a.test", PASSWORD).status_code == 429
    # then another account of A, and the same e-mail's account in clinic B, still log in
    assert _login(client, "propietario@clinica-a.test", PASSWORD, ip="10.0.0.2").status_code == 200
    client_b = client_for("test_b")
    assert _login(client_b, "admin@clinica-b.test", PASSWORD, ip="10.0.0.3").status_code == 200


def test_successful_logins_do_not_count(client_for):
    client = client_for("test_a")
    statuses = [_login(client, "admin@clinica-a.test", PASSWORD).status_code for _ in range(PER_ACCOUNT + 2)]
    assert statuses == [200] * (PER_ACCOUNT + 2)


def test_an_address_is_refused_with_429_after_its_failed_attempts_on_any_accounts(client_for):
    client = client_for("test_a")
    # given failures from one address, each on another (unknown) account
    statuses = [_login(client, f"nadie{n}@clinica-a.test", "incorrecta").status_code for n in range(PER_IP)]
    # when that address tries again, even a real account with the right password
    refused = _login(client, "recepcion@clinica-a.test", PASSWORD)
    # then it is refused, while another address still logs in
    assert statuses == [401] * PER_IP
    assert refused.status_code == 429 and refused.json()["code"] == "throttled"
    assert _login(client, "recepcion@clinica-a.test", PASSWORD, ip="10.9.9.9").status_code == 200


def test_the_throttle_message_follows_accept_language(client_for):
    client = client_for("test_a")
    for _ in range(PER_ACCOUNT):
        _login(client, "admin@clinica-a.test", "incorrecta")
    response = client.post("/api/auth/token/", {"email": "admin@clinica-a.test", "password": "incorrecta"},
                           content_type="application/json", REMOTE_ADDR="10.0.0.1", HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 429
    assert response.json()["message"] == "Too many failed login attempts. Wait before trying again."


def _admin_login(client, email: str, password: str, ip: str = "10.0.0.1"):
    with schema_context(client.tenant.schema_name):  # admin access, so that the right password gets in
        Usuario.objects.filter(email__iexact=email.strip()).update(is_staff=True)
    return client.post("/admin/login/", {"username": email, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip)


def test_the_admin_login_form_is_limited_as_the_api_is_and_counts_with_it(client_for):
    client = client_for("test_a")
    # given all but one of an account's allowed failures through the API, and one through the admin's form
    for n in range(PER_ACCOUNT - 1):
        _login(client, "admin@clinica-a.test", "incorrecta", ip=f"10.0.3.{n}")
    failed = _admin_login(client, "admin@clinica-a.test", "incorrecta", ip="10.0.4.1")
    # when the right password comes through the form
    refused = _admin_login(client, "Admin@Clinica-A.test", PASSWORD, ip="10.0.4.2")
    # then the failure was the form again, and now the form refuses before checking it: 429, with when to retry
    assert failed.status_code == 200
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 3600
    assert "Demasiados intentos fallidos" in refused.content.decode()
    assert _login(client, "admin@clinica-a.test", PASSWORD, ip="10.0.4.3").status_code == 429
    # while another account still logs in through the form
    assert _admin_login(client, "propietario@clinica-a.test", PASSWORD, ip="10.0.4.4").status_code == 302


def test_the_admin_login_form_is_limited_per_address(client_for):
    client = client_for("test_a")
    statuses = [_admin_login(client, f"nadie{n}@clinica-a.test", "incorrecta").status_code for n in range(PER_IP)]
    assert statuses == [200] * PER_IP
    assert _admin_login(client, "admin@clinica-a.test", PASSWORD).status_code == 429
    assert _admin_login(client, "admin@clinica-a.test", PASSWORD, ip="10.9.9.8").status_code == 302


# The client's address when a login passes no proxy (NUM_PROXIES unset: it is the peer, whatever
# X-Forwarded-For says) or one (NUM_PROXIES=1, as on Render: the proxy is the peer and appends
# the address it saw after whatever the client wrote in X-Forwarded-For).
PROXY = "10.0.0.254"


@pytest.fixture(params=[None, 1], ids=["no_proxy", "one_proxy"])
def proxies(request, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": request.param}
    return request.param


def _from(proxies: int | None, client_ip: str, written: str | None = None) -> dict:
    """The request's META as the application receives it: `written` is the client's own X-Forwarded-For."""
    if proxies is None:
        return {"REMOTE_ADDR": client_ip, **({"HTTP_X_FORWARDED_FOR": written} if written is not None else {})}
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": f"{written}, {client_ip}" if written else client_ip}


def _login_from(client, meta: dict, email: str, password: str):
    return client.post("/api/auth/token/", {"email": email, "password": password}, content_type="application/json", **meta)


def _forged_forwarded_for(n: int) -> str:
    # what the audit sent: another address per request; here also several, or none that is an address
    forms = [f"203.0.113.{n}", f"198.51.{n}.{n}, 192.0.2.{n}", f"2001:db8::{n:x}", f"nadie-{n}", ""]
    return forms[n % len(forms)]


def test_forged_forwarded_for_values_do_not_escape_the_address_limit(client_for, proxies):
    client = client_for("test_a")
    # given as many failures as the address limit allows from one client, each with another X-Forwarded-For
    statuses = [_login_from(client, _from(proxies, "198.51.100.7", _forged_forwarded_for(n)), f"nadie{n}@clinica-a.test",
                            "incorrecta").status_code for n in range(PER_IP)]
    # when that client tries once more with yet another one, and the right password of a real account
    refused = _login_from(client, _from(proxies, "198.51.100.7", "192.0.2.250"), "recepcion@clinica-a.test", PASSWORD)
    # then it was counted as one address throughout, and is refused
    assert statuses == [401] * PER_IP
    assert refused.status_code == 429 and refused.json()["code"] == "throttled"


@pytest.mark.parametrize("written", ["10.9.9.9", "198.51.100.7, 10.9.9.9", "10.9.9.9, 198.51.100.7", "", " , ", "nadie"])
def test_appending_forwarded_for_entries_does_not_unblock_an_address(client_for, proxies, written):
    client = client_for("test_a")
    # given a client blocked by its failures
    for n in range(PER_IP):
        _login_from(client, _from(proxies, "198.51.100.7"), f"nadie{n}@clinica-a.test", "incorrecta")
    # when it comes back writing addresses of its own into X-Forwarded-For
    response = _login_from(client, _from(proxies, "198.51.100.7", written), "recepcion@clinica-a.test", PASSWORD)
    # then it is still refused, while another client (writing the blocked one's address) logs in
    assert response.status_code == 429
    other = _login_from(client, _from(proxies, "198.51.100.8", "198.51.100.7"), "recepcion@clinica-a.test", PASSWORD)
    assert other.status_code == 200


def test_a_forwarded_for_shorter_than_the_proxies_counts_on_the_peer_address(client_for, settings):
    # given two proxies configured, and requests that reach the application with fewer entries
    # than two (straight from the peer): none of those entries was written by a proxy
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 2}
    client = client_for("test_a")
    statuses = [_login_from(client, {"REMOTE_ADDR": "198.51.100.9", "HTTP_X_FORWARDED_FOR": f"203.0.113.{n}"},
                            f"nadie{n}@clinica-a.test", "incorrecta").status_code for n in range(PER_IP)]
    # when the same peer tries again with yet another single entry
    refused = _login_from(client, {"REMOTE_ADDR": "198.51.100.9", "HTTP_X_FORWARDED_FOR": "203.0.113.250"},
                          "recepcion@clinica-a.test", PASSWORD)
    # then every attempt counted on the peer, not on the entry it chose
    assert statuses == [401] * PER_IP
    assert refused.status_code == 429


def test_the_admin_login_form_takes_the_client_address_by_the_same_rule(client_for, proxies):
    client = client_for("test_a")
    with schema_context("test_a"):
        Usuario.objects.filter(email="propietario@clinica-a.test").update(is_staff=True)
    # given failures through the admin's form from one client, each with another X-Forwarded-For
    statuses = [client.post("/admin/login/", {"username": f"nadie{n}@clinica-a.test", "password": "incorrecta"},
                            **_from(proxies, "198.51.100.7", _forged_forwarded_for(n))).status_code for n in range(PER_IP)]
    # when the same client comes to either door with another one
    form = client.post("/admin/login/", {"username": "propietario@clinica-a.test", "password": PASSWORD},
                       **_from(proxies, "198.51.100.7", "10.9.9.9"))
    api = _login_from(client, _from(proxies, "198.51.100.7", "198.51.100.7, 10.9.9.9"), "propietario@clinica-a.test", PASSWORD)
    # then both refuse it, while another client through the same proxy gets in
    assert statuses == [200] * PER_IP
    assert form.status_code == 429 and api.status_code == 429
    other = client.post("/admin/login/", {"username": "propietario@clinica-a.test", "password": PASSWORD},
                        **_from(proxies, "198.51.100.8", "198.51.100.7"))
    assert other.status_code == 302
