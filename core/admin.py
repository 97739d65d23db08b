from django.contrib import admin
from django_tenants.admin import TenantAdminMixin
from django_tenants.utils import get_public_schema_name

from core.models import Domain, Tenant


class PublicSchemaOnlyAdmin(admin.ModelAdmin):
    """Clinics and domains are managed from the public admin only."""

    @staticmethod
    def _on_public_schema(request) -> bool:
        return getattr(request, "tenant", None) is None or request.tenant.schema_name == get_public_schema_name()

    def has_module_permission(self, request):
        return self._on_public_schema(request) and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return self._on_public_schema(request) and super().has_view_permission(request, obj)

    def has_add_permission(self, request):
        return self._on_public_schema(request) and super().has_add_permission(request)

    def has_change_permission(self, request, obj=None):
        return self._on_public_schema(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._on_public_schema(request) and super().has_delete_permission(request, obj)


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant)
class TenantAdmin(TenantAdminMixin, PublicSchemaOnlyAdmin):
    list_display = ("nombre", "schema_name", "slug", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("nombre", "schema_name", "slug")
    inlines = [DomainInline]
