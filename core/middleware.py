from django.core.exceptions import DisallowedHost
from django.db import connection
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django_tenants.middleware.main import TenantMainMiddleware

from core.exceptions import error_body
from core.selectors import tenant_find

TENANT_HEADERS = ("X-Tenant-ID", "X-Tenant")


class TenantMiddleware(TenantMainMiddleware):
    """Selects the clinic from X-Tenant-ID (schema name or slug), else from the host.

    The header can never select the public schema, and an unknown or inactive
    clinic is a 404 with the API's JSON error body.
    """

    def process_request(self, request):
        try:
            request.get_host()
        except DisallowedHost:
            # Django and django-tenants would answer in HTML; the API answers in its own shape.
            return JsonResponse(error_body("host_not_allowed", _("Host no permitido.")), status=400)
        requested = next((request.headers[h].strip() for h in TENANT_HEADERS if request.headers.get(h)), None)
        if requested is None:
            return super().process_request(request)

        connection.set_schema_to_public()
        tenant = tenant_find(requested, active_only=True)
        if tenant is None:
            return self._not_found(requested)
        request.tenant = tenant
        connection.set_tenant(tenant)
        self.setup_url_routing(request)
        return None

    def get_tenant(self, domain_model, hostname):
        tenant = super().get_tenant(domain_model, hostname)
        if not tenant.is_active:
            raise domain_model.DoesNotExist
        return tenant

    @staticmethod
    def _not_found(requested: str) -> JsonResponse:
        return JsonResponse(
            error_body("tenant_not_found", _("La clínica «%(tenant)s» no existe o está inactiva.") % {"tenant": requested}),
            status=404,
        )
