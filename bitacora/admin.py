from django.contrib import admin

from bitacora.models import Bitacora
from usuarios.permissions import AdminOrPropietarioAdminMixin


@admin.register(Bitacora)
class BitacoraAdmin(AdminOrPropietarioAdminMixin, admin.ModelAdmin):
    """Read-only: the audit log is never edited or deleted by hand. Read by admin and propietario only, as in the API."""

    list_display = ("created_at", "action", "outcome", "actor_email", "target_type", "target_id", "ip")
    list_filter = ("outcome", "action", "created_at")
    search_fields = ("actor_email", "action", "target_id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
