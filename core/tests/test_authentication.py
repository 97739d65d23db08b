from datetime import timedelta

from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from usuarios.models import Usuario


def test_token_works_in_the_clinic_that_issued_it(client_for):
    client = client_for("test_a", "recepcion")
    response = client.get("/api/auth/me/")
    assert response.status_code == 200
    assert response.json() == {
        "id": response.json()["id"],
        "email": "recepcion@clinica-a.test",
        "nombre": "Recepción",
        "apellido": "Clínica A",
        "rol": "recepcion",
    }


def test_access_token_from_clinic_a_is_refused_in_clinic_b(client_for):
    # given an access token of clinic A, whose user id also exists in clinic B
    token_a = client_for("test_a", "admin").tokens["access"]
    # when it is sent to clinic B
    response = client_for("test_b").get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {token_a}")
    # then
    assert response.status_code == 401
    assert response.json()["code"] == "token_wrong_tenant"


def test_refresh_token_from_clinic_a_is_refused_in_clinic_b(client_for):
    refresh_a = client_for("test_a", "admin").tokens["refresh"]
    response = client_for("test_b").post(
        "/api/auth/token/refresh/", {"refresh": refresh_a}, content_type="application/json"
    )
    assert response.status_code == 401


def test_refresh_in_the_same_clinic_gives_a_working_access_token(client_for):
    client = client_for("test_a", "admin")
    response = client.post("/api/auth/token/refresh/", {"refresh": client.tokens["refresh"]}, content_type="application/json")
    assert response.status_code == 200
    access = response.json()["access"]
    assert AccessToken(access)["tenant"] == "test_a"
    assert client_for("test_a").get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200


def test_refresh_for_a_user_missing_in_this_clinic_is_a_401_not_a_500(client_for, tenant_a):
    # given a well-signed refresh token for clinic A whose user does not exist there
    user = Usuario(pk=987654321, email="fantasma@clinica-a.test")
    refresh = RefreshToken.for_user(user)
    refresh["tenant"] = "test_a"
    # when
    response = client_for("test_a").post("/api/auth/token/refresh/", {"refresh": str(refresh)}, content_type="application/json")
    # then
    assert response.status_code == 401
    assert response.json()["code"] == "no_active_account"


def test_no_token_is_a_401(client_for):
    response = client_for("test_a").get("/api/auth/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_tampered_token_is_a_401(client_for):
    access = client_for("test_a", "admin").tokens["access"]
    header, payload, signature = access.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    response = client_for("test_a").get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {tampered}")
    assert response.status_code == 401


def test_expired_token_is_a_401(client_for, tenant_a):
    user = Usuario.objects.get(email="admin@clinica-a.test")
    access = AccessToken.for_user(user)
    access["tenant"] = "test_a"
    access.set_exp(lifetime=-timedelta(seconds=1))
    response = client_for("test_a").get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 401


def test_token_without_tenant_claim_is_a_401(client_for, tenant_a):
    user = Usuario.objects.get(email="admin@clinica-a.test")
    response = client_for("test_a").get("/api/auth/me/", HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    assert response.status_code == 401


def test_wrong_password_is_a_401_with_the_common_error_shape(client_for):
    response = client_for("test_a").post(
        "/api/auth/token/", {"email": "admin@clinica-a.test", "password": "incorrecta"}, content_type="application/json"
    )
    assert response.status_code == 401
    assert set(response.json()) == {"success", "code", "message", "details"}


def test_messages_follow_accept_language(client_for):
    response = client_for("test_a").get("/api/auth/me/", HTTP_ACCEPT_LANGUAGE="en")
    assert response.json()["message"] == "Authentication is required."
    response = client_for("test_a").get("/api/auth/me/")
    assert response.json()["message"] == "Se requiere autenticación."
