"""simplejwt bound to the clinic that issued the token.

User ids repeat across schemas, so a stock token from clinic A would
authenticate as whichever user has the same id in clinic B. Every token
carries a `tenant` claim and is refused (401) anywhere else.

A token's signature says who signed it, not that its claims have the types this
server writes: stock simplejwt passes `user_id` straight to the ORM (`[1]` is a 500,
`true` or `" 1 "` is user 1) and `exp` to datetime (10**20, or a number written as
text, is a 500). TenantAccessToken and TenantRefreshToken refuse, as an invalid token (401),
any claim the server reads that is not what it writes.
"""
from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token

TENANT_CLAIM = "tenant"
# The last second datetime can hold (9999-12-31T23:59:59Z): simplejwt makes a datetime of `exp`.
LAST_TIMESTAMP = 253402300799
# The user's primary key (a BigAutoField) as simplejwt 5.5 writes it: ASCII digits only, since
# int() also reads " 1 ", "1_0" and other scripts' digits ("١"), and within bigint.
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")
_BIGINT_MAX = 2**63 - 1


def _is_timestamp(value: Any) -> bool:
    return type(value) is int and 0 <= value <= LAST_TIMESTAMP  # not bool, not float, not text


def _is_user_id(value: Any) -> bool:
    if type(value) is int:  # as simplejwt before 5.5 wrote it
        return 0 < value <= _BIGINT_MAX
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None and int(value) <= _BIGINT_MAX


def token_claims_check(payload: dict) -> None:
    """Refuse (TokenError) a payload whose claims the server reads are not of the types it writes.

    Presence is left to the checks that follow (simplejwt's, ensure_token_tenant), which
    refuse a missing claim already; a present claim of another type would reach them, or
    the ORM, as is.
    """
    checks = {
        "exp": _is_timestamp,
        "iat": _is_timestamp,
        api_settings.TOKEN_TYPE_CLAIM: lambda value: isinstance(value, str),
        api_settings.JTI_CLAIM: lambda value: isinstance(value, str),
        api_settings.USER_ID_CLAIM: _is_user_id,
        TENANT_CLAIM: lambda value: isinstance(value, str),
    }
    for claim, valid in checks.items():
        if claim in payload and not valid(payload[claim]):
            raise TokenError(_("El token no es válido o ha expirado."))


class _ClaimsChecked:
    def verify(self) -> None:
        token_claims_check(self.payload)
        super().verify()


class TenantAccessToken(_ClaimsChecked, AccessToken):
    """simplejwt's access token, refused (TokenError) when a claim is not of the type the server writes."""


class TenantRefreshToken(_ClaimsChecked, RefreshToken):
    """simplejwt's refresh token, refused (TokenError) when a claim is not of the type the server writes."""

    access_token_class = TenantAccessToken


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
    token_class = TenantRefreshToken
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
    token_class = TenantRefreshToken

    def validate(self, attrs):
        refresh = self.token_class(attrs["refresh"])
        ensure_token_tenant(refresh)
        # Stock simplejwt lets DoesNotExist escape here (a 500) when the user is
        # not in this schema; it is simply an invalid token.
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(_("No hay una cuenta activa para este token."), code="no_active_account")
        return super().validate(attrs)
