"""simplejwt bound to the clinic that issued the token.

User ids repeat across schemas, so a stock token from clinic A would
authenticate as whichever user has the same id in clinic B. Every token
carries a `tenant` claim and is refused (401) anywhere else.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken, Token

TENANT_CLAIM = "tenant"


def _current_schema() -> str:
    return connection.schema_name


def ensure_token_tenant(token: Token) -> None:
    if token.get(TENANT_CLAIM) != _current_schema():
        raise InvalidToken(_("El token no pertenece a esta clínica."), code="token_wrong_tenant")


class TenantJWTAuthentication(JWTAuthentication):
    def get_validated_token(self, raw_token: bytes) -> Token:
        token = super().get_validated_token(raw_token)
        ensure_token_tenant(token)
        return token


class TenantTokenObtainPairSerializer(TokenObtainPairSerializer):
    default_error_messages = {
        # simplejwt's message is English whatever the language: it is not an installed
        # app, so Django never loads its catalog (whose Spanish is partial anyway).
        "no_active_account": _("No hay una cuenta activa con ese email y contraseña."),
    }

    @classmethod
    def get_token(cls, user) -> Token:
        token = super().get_token(user)
        token[TENANT_CLAIM] = _current_schema()
        return token


class TenantTokenRefreshSerializer(TokenRefreshSerializer):
    def validate(self, attrs):
        refresh = RefreshToken(attrs["refresh"])
        ensure_token_tenant(refresh)
        # Stock simplejwt lets DoesNotExist escape here (a 500) when the user is
        # not in this schema; it is simply an invalid token.
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(_("No hay una cuenta activa para este token."), code="no_active_account")
        return super().validate(attrs)
