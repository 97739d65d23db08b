"""drf-spectacular extensions: it does not know our JWT subclass until told."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
