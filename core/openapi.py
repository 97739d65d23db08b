"""drf-spectacular extensions: our JWT subclass, the clinic header, and the error answers every operation can give.

Every error the API answers has one shape (core.exceptions.error_body, core.openapi_errors), and
AutoSchema documents it on each operation for the statuses that operation can
answer whatever its view says: 404 (an unknown clinic in X-Tenant-ID, or an
unknown id), 401 with authentication or a clinic to name, 403 with a role check,
400 and 415 with a request body, 400 with query parameters, 429 with throttling.
Statuses only some views answer (409, 413, 503…) are declared on those views with
error_response().

X-Tenant-ID is a required header parameter of every clinic operation, not a security
scheme: it names the clinic, and an unknown one is a 404 like an unknown id (tools
that test security schemes expect 401 for a wrong API key). Missing, it is a 401
(core.middleware). A view that is no clinic's (health) sets `clinic_scoped = False`.

This module loads where a schema is generated (DEFAULT_SCHEMA_CLASS names its AutoSchema, and
its extensions register as it loads), not at start: what the views need at import, the error
answers, is core.openapi_errors.
"""
from __future__ import annotations

import functools

from django.db import connection
from django_tenants.utils import get_public_schema_name
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import permissions, serializers
from rest_framework_simplejwt.views import TokenViewBase

from core.openapi_errors import error_response


class TenantJWTScheme(OpenApiAuthenticationExtension):
    target_class = "core.authentication.TenantJWTAuthentication"
    name = "tenantJWT"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "Token de POST /api/auth/token/. Sólo vale en la clínica que lo emitió: "
                "envíe también la cabecera X-Tenant-ID con el esquema o slug de esa clínica."
            ),
        }


TENANT_HEADER = OpenApiParameter(
    "X-Tenant-ID", str, OpenApiParameter.HEADER, required=True,
    description="Esquema o slug de la clínica (también se acepta X-Tenant; en el dominio propio de la clínica "
                "o bajo /clinicas/<slug>/ no hace falta). Sin ella: 401; una clínica desconocida: 404.",
)


class ClinicSchemaNameScheme(OpenApiSerializerFieldExtension):
    """The restore's `confirm`: served for a clinic, the schema says the one value it takes."""

    target_class = "backups.serializers.ClinicSchemaNameField"

    def map_serializer_field(self, auto_schema, direction):
        schema = {"type": "string"}  # and, as for any CharField, its help text, minLength and pattern
        if connection.schema_name != get_public_schema_name():
            schema["enum"] = [connection.schema_name]
        return schema


# What DRF's CharField refuses, as JSON Schema patterns: NUL anywhere (ProhibitNullCharactersValidator)
# and, unless allow_blank, a value that str.strip() (trim_whitespace) leaves empty.
NO_NUL = "^[^\\u0000]*$"


@functools.cache
def not_blank() -> str:
    # Python's spaces, found among the 65,536 characters of the BMP when a schema first needs them
    # (every view's extend_schema loads this module: not at each start).
    spaces = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x10000)) if c.isspace())
    return f"^[^\\u0000]*[^\\u0000{spaces}][^\\u0000]*$"


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers each operation can give, in the error shape."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status in sorted(self._error_statuses()):
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    error_response(status), str(status), media_types=["application/json"], direction=direction
                )
        return dict(sorted(responses.items()))

    def _get_serializer_field_meta(self, field, direction):
        meta = super()._get_serializer_field_meta(field, direction)
        if direction == "request" and isinstance(field, serializers.CharField) and not field.read_only:
            meta["pattern"] = not_blank() if field.trim_whitespace and not field.allow_blank else NO_NUL
        return meta

    def _get_parameters(self):
        parameters = super()._get_parameters()
        for parameter in parameters:
            if parameter["in"] == "query" and not parameter.get("required"):
                # DRF reads an optional query parameter sent empty (`?status=`) as one not sent.
                parameter["allowEmptyValue"] = True
                parameter.get("schema", {}).pop("minLength", None)
        return parameters

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        return [*parameters, TENANT_HEADER] if getattr(self.view, "clinic_scoped", True) else parameters

    def _error_statuses(self) -> set[int]:
        statuses = {404}  # the tenant middleware answers 404 to an unknown X-Tenant-ID, anywhere
        view = self.view
        if view.get_authenticators() or isinstance(view, TokenViewBase) or getattr(view, "clinic_scoped", True):
            # a bad token, anywhere it is read; wrong credentials or refresh token, on token views;
            # no clinic named, on a clinic's operation
            statuses.add(401)
        if any(not isinstance(p, (permissions.AllowAny, permissions.IsAuthenticated)) for p in view.get_permissions()):
            statuses.add(403)
        if self.method in ("POST", "PUT", "PATCH"):
            statuses.update({400, 415})
        query = [p for p in self.get_override_parameters()
                 if p is not TENANT_HEADER and not (isinstance(p, OpenApiParameter) and p.response)]
        if query or self._get_paginator():
            statuses.add(400)
        if getattr(view, "throttle_classes", None):
            statuses.add(429)
        return statuses
