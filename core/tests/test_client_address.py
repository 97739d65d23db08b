"""Who sent a request: the peer, unless NUM_PROXIES trusts that many proxies' X-Forwarded-For entries.

The rule as a table, then over real HTTP (gunicorn) for the login limit and the audit log.
"""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.test import RequestFactory

from core.client_address import client_address
from core.tests.conftest import DEMO_PASSWORD, gunicorn_serving

PEER = "10.0.0.254"


@pytest.mark.parametrize(
    ("num_proxies", "forwarded_for", "client"),
    [
        # no proxy trusted: the header is ignored, whatever it holds
        (None, None, PEER),
        (None, "203.0.113.7", PEER),
        (None, "203.0.113.7, 10.9.9.9", PEER),
        (0, "203.0.113.7", PEER),
        # N proxies: the Nth entry from the right, spaces and spelling normalised
        (1, "203.0.113.7", "203.0.113.7"),
        (1, "10.9.9.9, 1.1.1.1,203.0.113.7", "203.0.113.7"),
        (1, " 2001:DB8:0::7 ", "2001:db8::7"),
        (1, "::ffff:203.0.113.7", "203.0.113.7"),
        (2, "10.9.9.9, 203.0.113.7, 10.0.0.1", "203.0.113.7"),
        # fewer entries than proxies, none, or one that is no address: nobody's word but the peer's
        (2, "203.0.113.7", PEER),
        (1, None, PEER),
        (1, "", PEER),
        (1, "10.9.9.9, ", PEER),
        (1, "10.9.9.9, unknown", PEER),
        (1, "10.9.9.9, 203.0.113.7:443", PEER),
    ],
)
def test_the_client_is_the_peer_or_the_entry_the_trusted_proxies_wrote(settings, num_proxies, forwarded_for, client):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": num_proxies}
    headers = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}
    assert client_address(RequestFactory().get("/", REMOTE_ADDR=PEER, **headers)) == client


@pytest.mark.parametrize("peer", ["", "unix:/run/gunicorn.sock"])
def test_a_peer_that_is_no_ip_address_gives_none(settings, peer):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": None}
    assert client_address(RequestFactory().get("/", REMOTE_ADDR=peer)) is None


# Through real HTTP: gunicorn serving `make demo`'s clinics, once as a deployment with no proxy
# in front and once behind one (NUM_PROXIES=1, as render.yaml sets), this test playing the proxy.
HTTP_PER_IP = 5
DEMO_ACCOUNT = "recepcion@clinicademo1.com"


@pytest.fixture(scope="module")
def servers(demo_site):
    limits = {"LOGIN_FAILURES_PER_IP": f"{HTTP_PER_IP}/hour", "LOGIN_FAILURES_PER_ACCOUNT": "1000/hour"}
    with gunicorn_serving(demo_site, NUM_PROXIES=None, **limits) as direct, \
            gunicorn_serving(demo_site, NUM_PROXIES="1", **limits) as behind_proxy:
        yield {"direct": direct, "behind_proxy": behind_proxy}


def _post(base_url: str, path: str, body: dict, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base_url}{path}", method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-Tenant-ID": "clinica_demo", **headers})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to gunicorn, whatever *_proxy says
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _login(base_url: str, email: str, password: str, forwarded_for: str | None = None) -> int:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    return _post(base_url, "/api/auth/token/", {"email": email, "password": password}, headers)[0]


@pytest.mark.no_test_db
def test_over_http_without_a_proxy_forwarded_for_neither_escapes_nor_unblocks_the_address_limit(servers):
    base_url = servers["direct"]
    # given failures from this one peer, each with another forged X-Forwarded-For
    statuses = [_login(base_url, f"nadie{n}@clinicademo1.com", "incorrecta", f"203.0.113.{n}") for n in range(HTTP_PER_IP)]
    # then the next attempt is refused, whatever it writes or appends there
    assert statuses == [401] * HTTP_PER_IP
    assert _login(base_url, DEMO_ACCOUNT, DEMO_PASSWORD, "203.0.113.250") == 429
    assert _login(base_url, DEMO_ACCOUNT, DEMO_PASSWORD, "127.0.0.1, 10.9.9.9") == 429
    assert _login(base_url, DEMO_ACCOUNT, DEMO_PASSWORD) == 429


@pytest.mark.no_test_db
def test_over_http_behind_one_proxy_the_client_is_the_address_the_proxy_appended(servers, demo_site):
    base_url = servers["behind_proxy"]
    # given failures from one client, each writing another X-Forwarded-For before the proxy's entry
    statuses = [_login(base_url, f"nadie{n}@clinicademo1.com", "incorrecta", f"203.0.113.{n}, 198.51.100.7")
                for n in range(HTTP_PER_IP)]
    # then that client is refused whatever it writes, and another client behind the same proxy is not
    assert statuses == [401] * HTTP_PER_IP
    assert _login(base_url, DEMO_ACCOUNT, DEMO_PASSWORD, "10.9.9.9, 198.51.100.7") == 429
    assert _login(base_url, DEMO_ACCOUNT, DEMO_PASSWORD, "198.51.100.7, 10.9.9.9, 198.51.100.7") == 429
    assert _login(base_url, DEMO_ACCOUNT, DEMO_PASSWORD, "198.51.100.7, 198.51.100.8") == 200
    # and the audit log names that client too, not the proxy (the peer) nor what the client wrote
    status, tokens = _post(base_url, "/api/auth/token/", {"email": "admin@clinicademo1.com", "password": DEMO_PASSWORD},
                           {"X-Forwarded-For": "198.51.100.9"})
    assert status == 200
    status, _ = _post(base_url, "/api/restore/", {}, {"X-Forwarded-For": "10.9.9.9, 198.51.100.9",
                                                       "Authorization": f"Bearer {tokens['access']}"})
    assert status == 415  # refused (a restore takes a multipart file), and audited
    ((ip,),) = demo_site.sql("SELECT host(ip) FROM clinica_demo.bitacora_bitacora WHERE action = 'tenant_data.restore' "
                             "ORDER BY id DESC LIMIT 1")
    assert ip == "198.51.100.9"


@pytest.mark.parametrize(("num_proxies", "secure"), [("", False), ("0", False), ("1", True)])
def test_x_forwarded_proto_is_believed_only_behind_a_proxy_of_ours(num_proxies, secure):
    # given the settings as a process starts with NUM_PROXIES so (Render sets 1)
    probe = ("import django; django.setup(); from django.test import RequestFactory; "
             "print(RequestFactory().get('/', HTTP_X_FORWARDED_PROTO='https').is_secure())")
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "core.settings", "DEBUG": "1", "NUM_PROXIES": num_proxies}
    # when a plain-HTTP request says it came over https
    result = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, text=True, timeout=60)
    # then it is taken as secure only when a proxy of ours wrote that header
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(secure)
