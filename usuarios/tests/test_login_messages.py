"""Login and token errors speak Spanish by default and English with Accept-Language: en."""
import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def empty_cache():
    # Wrong passwords count toward the login throttle, whose counts outlive the test.
    cache.clear()
    yield
    cache.clear()


def _wrong_password(client, **headers):
    return client.post("/api/auth/token/", {"email": "admin@clinica-a.test", "password": "incorrecta"},
                       content_type="application/json", **headers)


def _bad_refresh(client, **headers):
    return client.post("/api/auth/token/refresh/", {"refresh": "no-es-un-token"}, content_type="application/json", **headers)


def _bad_access(client, **headers):
    return client.get("/api/auth/me/", HTTP_AUTHORIZATION="Bearer no-es-un-token", **headers)


def _bad_header(client, **headers):
    return client.get("/api/auth/me/", HTTP_AUTHORIZATION="Bearer dos partes", **headers)


@pytest.mark.parametrize(
    ("call", "code", "spanish", "english"),
    [
        (_wrong_password, "authentication_failed", "No hay una cuenta activa con ese email y contraseña.",
         "No active account found with the given credentials."),
        (_bad_refresh, "token_not_valid", "El token no es válido o ha expirado.", "The token is invalid or expired."),
        (_bad_access, "token_not_valid", "El token no es válido o ha expirado.", "The token is invalid or expired."),
        (_bad_header, "bad_authorization_header", "La cabecera Authorization debe tener la forma «Bearer <token>».",
         "The Authorization header must be of the form “Bearer <token>”."),
    ],
)
def test_login_and_token_errors_follow_the_language(client_for, call, code, spanish, english):
    client = client_for("test_a")
    # when no language is asked for (the clinics' default) or English is
    default = call(client)
    in_english = call(client, HTTP_ACCEPT_LANGUAGE="en")
    # then the same 401 and code, in Spanish and in English
    assert (default.status_code, default.json()["code"], default.json()["message"]) == (401, code, spanish)
    assert (in_english.status_code, in_english.json()["code"], in_english.json()["message"]) == (401, code, english)


def test_a_token_of_a_deactivated_user_is_refused_in_spanish(client_for, tenant_a):
    from usuarios.models import Usuario

    # given a logged-in user who is then deactivated
    client = client_for("test_a", "recepcion")
    Usuario.objects.filter(email="recepcion@clinica-a.test").update(is_active=False)
    # when the token is used
    response = client.get("/api/auth/me/")
    # then
    assert response.status_code == 401
    assert (response.json()["code"], response.json()["message"]) == ("user_inactive", "El usuario está inactivo.")
