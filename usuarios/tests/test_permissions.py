import pytest
from rest_framework.test import APIRequestFactory

from usuarios.models import Usuario
from usuarios.permissions import IsAdminOrPropietario


@pytest.mark.parametrize(
    ("rol", "allowed"),
    [("admin", True), ("propietario", True), ("odontologo", False), ("recepcion", False), ("asistente", False)],
)
def test_only_admin_and_owner_pass_the_admin_or_owner_permission(rol, allowed):
    request = APIRequestFactory().get("/")
    request.user = Usuario(email="x@x.test", rol=rol)
    assert IsAdminOrPropietario().has_permission(request, view=None) is allowed


def test_anonymous_does_not_pass():
    request = APIRequestFactory().get("/")
    request.user = None
    assert IsAdminOrPropietario().has_permission(request, view=None) is False
