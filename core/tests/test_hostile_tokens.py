"""Tokens signed with the server's own key but hostile in any part: always a 401 in the error shape.

A key that signs one token signs any payload (a leaked key, a bug in whatever issues
tokens, a token of an older release): every claim the server reads (user_id, tenant,
exp, token_type, jti) may hold any JSON value, the payload may be no object at all,
and none of it may become a 500, nor a login as somebody else.
"""
import base64
import json
import time

import pytest
from jwt.algorithms import HMACAlgorithm
from rest_framework_simplejwt.settings import api_settings

from usuarios.models import Usuario

ERROR_KEYS = {"success", "code", "message", "details"}
ABSENT = object()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _sign(payload, *, header=None) -> str:
    """Any payload (any JSON, or bytes) under any header, signed with the server's key by
    pyjwt's HS256 (whose own encoder refuses to write some of these)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode()) + b"." + _b64(body)
    algorithm = HMACAlgorithm(HMACAlgorithm.SHA256)
    signature = algorithm.sign(signing_input, algorithm.prepare_key(api_settings.SIGNING_KEY))
    return (signing_input + b"." + _b64(signature)).decode()


def _claims(kind: str, user_pk, changes: dict | None = None) -> dict:
    """The claims simplejwt writes for a token of clinic A, with `changes` applied."""
    now = int(time.time())
    claims = {"token_type": kind, "exp": now + 600, "iat": now, "jti": "a" * 32,
              api_settings.USER_ID_CLAIM: str(user_pk), "tenant": "test_a"}
    for name, value in (changes or {}).items():
        if value is ABSENT:
            claims.pop(name)
        else:
            claims[name] = value
    return claims


def _with(**changes):
    return lambda kind, user_pk: _sign(_claims(kind, user_pk, changes))


HOSTILE_TOKENS = {
    # the claim the audit found: user_id of any other type or form than the id simplejwt writes
    "user_id_list": _with(user_id=[1]),
    "user_id_dict": _with(user_id={"id": 1}),
    "user_id_huge": _with(user_id=10**30),
    "user_id_over_bigint": _with(user_id=str(2**63)),
    "user_id_negative": _with(user_id=-1),
    "user_id_null": _with(user_id=None),
    "user_id_true": _with(user_id=True),  # int(True) is 1: somebody else's account
    "user_id_float": _with(user_id=1.5),
    "user_id_not_numeric": _with(user_id="abc"),
    "user_id_decimal_text": _with(user_id="1.5"),
    "user_id_spaced": _with(user_id=" 1 "),
    "user_id_arabic_digit": _with(user_id="١"),
    "user_id_empty": _with(user_id=""),
    "user_id_5000_digits": _with(user_id="9" * 5000),
    "user_id_missing": _with(user_id=ABSENT),
    "tenant_missing": _with(tenant=ABSENT),
    "tenant_null": _with(tenant=None),
    "tenant_list": _with(tenant=["test_a"]),
    "tenant_dict": _with(tenant={"schema": "test_a"}),
    "tenant_number": _with(tenant=1),
    "exp_text": _with(exp="abc"),
    "exp_numeric_text": _with(exp=str(int(time.time()) + 600)),
    "exp_huge": _with(exp=10**20),
    "exp_after_year_9999": _with(exp=253402300800),
    "exp_float_huge": _with(exp=1e300),
    "exp_null": _with(exp=None),
    "exp_list": _with(exp=[1]),
    "exp_missing": _with(exp=ABSENT),
    "iat_text": _with(iat="abc"),
    "iat_huge": _with(iat=10**30),
    "token_type_list": _with(token_type=["access"]),
    "token_type_null": _with(token_type=None),
    "token_type_missing": _with(token_type=ABSENT),
    "jti_list": _with(jti=[1]),
    "jti_null": _with(jti=None),
    "jti_missing": _with(jti=ABSENT),
    # the token as a whole
    "payload_a_list": lambda kind, user_pk: _sign([1, 2]),
    "payload_a_string": lambda kind, user_pk: _sign("test_a"),
    "payload_not_json": lambda kind, user_pk: _sign(b"\xff\xfe not json"),
    "payload_exp_infinity": lambda kind, user_pk: _sign(
        json.dumps(_claims(kind, user_pk, {"exp": float("inf")})).encode()),
    "payload_exp_nan": lambda kind, user_pk: _sign(json.dumps(_claims(kind, user_pk, {"exp": float("nan")})).encode()),
    "alg_none": lambda kind, user_pk: (
        _b64(b'{"alg":"none","typ":"JWT"}') + b"." + _b64(json.dumps(_claims(kind, user_pk)).encode()) + b".").decode(),
    "alg_hs512": lambda kind, user_pk: _sign(_claims(kind, user_pk), header={"alg": "HS512", "typ": "JWT"}),
    "header_a_list": lambda kind, user_pk: _sign(_claims(kind, user_pk), header=[1]),
    "header_kid_list": lambda kind, user_pk: _sign(_claims(kind, user_pk), header={"alg": "HS256", "kid": [1]}),
    "three_dots": lambda kind, user_pk: "a.b.c",
    "one_part": lambda kind, user_pk: "x",
    "latin1_bytes": lambda kind, user_pk: "é\xff.\xe9.\x80",  # what WSGI makes of non-ASCII header bytes
    "huge": lambda kind, user_pk: "A" * 100_000,
}


@pytest.fixture
def admin_pk(tenant_a) -> int:
    return Usuario.objects.get(email="admin@clinica-a.test").pk


def _assert_401(response) -> None:
    assert response.status_code == 401, response.content[:300]
    body = response.json()
    assert set(body) == ERROR_KEYS and body["success"] is False
    assert body["code"] in {"token_not_valid", "token_wrong_tenant", "user_not_found", "no_active_account"}


def _me(client, token: str):
    return client.get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {token}")


def _refresh(client, token: str):
    return client.post("/api/auth/token/refresh/", {"refresh": token}, content_type="application/json")


@pytest.mark.parametrize("make", HOSTILE_TOKENS.values(), ids=HOSTILE_TOKENS.keys())
def test_an_access_token_signed_here_is_a_401_once_any_part_is_hostile(client_for, admin_pk, make):
    client = client_for("test_a")
    # given an access token signed here, accepted as the server writes it
    assert _me(client, _sign(_claims("access", admin_pk))).status_code == 200
    # when one part of it is hostile, then it is refused in the error shape
    _assert_401(_me(client, make("access", admin_pk)))


@pytest.mark.parametrize("make", HOSTILE_TOKENS.values(), ids=HOSTILE_TOKENS.keys())
def test_a_refresh_token_signed_here_is_a_401_once_any_part_is_hostile(client_for, admin_pk, make):
    client = client_for("test_a")
    assert _refresh(client, _sign(_claims("refresh", admin_pk))).status_code == 200
    _assert_401(_refresh(client, make("refresh", admin_pk)))
