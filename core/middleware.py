"""Which clinic a request is for, and keeping each clinic's browser state its own.

TenantMiddleware picks the clinic, first match wins:
1. the X-Tenant-ID (or X-Tenant) header, schema name or slug: the React app's API calls;
2. the host name, a clinic's own Domain: `clinica-demo.example.com`;
3. the path, `/clinicas/<slug>/…` on any other host: django-tenants' subfolder routing
   (TENANT_SUBFOLDER_PREFIX), so a browser reaches a clinic's admin on the one shared
   host, where it cannot send a header;
4. else the public schema (the platform's admin, health, docs).
The header can never select the public schema, and an unknown or inactive clinic is a
404 with the API's JSON error body. A clinic's path (its API) with no clinic chosen is a
401 `tenant_required`: a token is valid only with its clinic, so the request is missing
half of its credentials; the path exists (the OpenAPI documents the header as required).

ClinicPathCookiesMiddleware keeps the cookies of a clinic reached by path (session,
CSRF, messages) that clinic's own, since every clinic shares the host.
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import connection
from django.http import JsonResponse
from django.urls import Resolver404, resolve, set_urlconf
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import gettext as _
from django_tenants.middleware.main import TenantMainMiddleware
from django_tenants.utils import get_public_schema_name

from core.clinic_paths import clinic_path_prefix, clinic_path_slug, clinic_path_urlconf
from core.exceptions import error_body
from core.selectors import tenant_find, tenant_find_by_slug

TENANT_HEADERS = ("X-Tenant-ID", "X-Tenant")


class TenantMiddleware(TenantMainMiddleware):
    """Selects the clinic from the header, else its host, else the `/clinicas/<slug>/` path."""

    def process_request(self, request):
        try:
            request.get_host()
        except DisallowedHost:
            # Django and django-tenants would answer in HTML; the API answers in its own shape.
            return JsonResponse(error_body("host_not_allowed", _("Host no permitido.")), status=400)
        requested = next((request.headers[h].strip() for h in TENANT_HEADERS if request.headers.get(h)), None)
        if requested is None:
            response = super().process_request(request)
            if response is not None or not self._on_public(request):
                return response
            slug = clinic_path_slug(request.path_info)
            if slug is not None:
                return self._select_by_path(request, slug)
            return self._tenant_required() if _clinic_only(request.path_info) else None

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
    def _on_public(request) -> bool:
        """No clinic's own domain: the shared host, where paths may name a clinic."""
        tenant = getattr(request, "tenant", None)
        return tenant is None or tenant.schema_name == get_public_schema_name()

    def _select_by_path(self, request, slug: str):
        tenant = tenant_find_by_slug(slug, active_only=True)
        if tenant is None:
            return self._not_found(slug)
        tenant.domain_subfolder = slug
        tenant.domain_url = self.hostname_from_request(request)
        request.tenant = tenant
        connection.set_tenant(tenant)
        request.urlconf = clinic_path_urlconf(slug)
        set_urlconf(request.urlconf)
        return None

    @staticmethod
    def _tenant_required() -> JsonResponse:
        response = JsonResponse(
            error_body("tenant_required", _("Indique la clínica: cabecera X-Tenant-ID con su esquema o slug.")),
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="api"'  # as DRF's 401s (a 401 must say how to authenticate)
        return response

    @staticmethod
    def _not_found(requested: str) -> JsonResponse:
        return JsonResponse(
            error_body("tenant_not_found", _("La clínica «%(tenant)s» no existe o está inactiva.") % {"tenant": requested}),
            status=404,
        )


def _clinic_only(path: str) -> bool:
    """A path only a clinic serves (its API), not the platform (health, docs, admin)."""
    for urlconf, clinic in ((settings.PUBLIC_SCHEMA_URLCONF, False), (settings.ROOT_URLCONF, True)):
        try:
            resolve(path, urlconf=urlconf)
        except Resolver404:
            continue
        return clinic
    return False


class ClinicPathCookiesMiddleware(MiddlewareMixin):
    """Under `/clinicas/<slug>/`, every cookie is that clinic's: its own name and path.

    All clinics reached by path share one host, so a browser would send a plain
    `sessionid` or `csrftoken` cookie to every clinic and to the platform admin, and a
    login in one would overwrite the others'. Here the cookies Django sets for a clinic
    (session, CSRF, messages) become `<name>.<slug>` with Path=/clinicas/<slug>/, and
    a clinic's request sees only those, under their usual names. A session is stored in
    its clinic's schema anyway, so a key taken from one clinic is unknown to another.
    Goes right below TenantMiddleware, above the session, CSRF and messages middleware.
    """

    def process_request(self, request):
        slug = self._clinic_slug(request)
        if slug is None:
            return
        suffix = f".{slug}"
        request.COOKIES = {name[: -len(suffix)]: value for name, value in request.COOKIES.items() if name.endswith(suffix)}

    def process_response(self, request, response):
        slug = self._clinic_slug(request)
        if slug is None:
            return response
        path = clinic_path_prefix(slug, script_name=request.META.get("SCRIPT_NAME", ""))
        for name, morsel in list(response.cookies.items()):
            scoped = f"{name}.{slug}"
            response.cookies[scoped] = morsel.value
            for key, value in morsel.items():
                if value:
                    response.cookies[scoped][key] = value
            response.cookies[scoped]["path"] = path
            del response.cookies[name]
        return response

    @staticmethod
    def _clinic_slug(request) -> str | None:
        return getattr(getattr(request, "tenant", None), "domain_subfolder", None)
