"""Who may manage a clinic's backups, restores and audit log, and who may open a patient's
files: one rule each, for the API and the admin alike."""
from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission


def es_admin_o_propietario(user) -> bool:
    """The rule itself: the clinic's admin or owner role, whatever is_staff or Django permissions say."""
    return bool(user and user.is_authenticated and user.es_administrativo)


def puede_ver_archivos_de_pacientes(user) -> bool:
    """Whether the user may open a patient's files (usuarios.models.ROLES_CLINICOS), whatever is_staff
    or Django permissions say: a radiograph is health data."""
    return bool(user and user.is_authenticated and user.ve_archivos_de_pacientes)


class IsAdminOrPropietario(BasePermission):
    """Only a clinic's admin or owner: backups, restores, the audit log."""

    message = _("Sólo el administrador o el propietario de la clínica pueden realizar esta acción.")

    def has_permission(self, request, view) -> bool:
        return es_admin_o_propietario(request.user)


class AdminOrPropietarioAdminMixin:
    """For a ModelAdmin: the same rule as IsAdminOrPropietario.

    The admin site lets in anyone with is_staff, and its custom views check
    nothing more, so a receptionist with admin access could otherwise download
    a full SQL dump. The role replaces Django's per-model permissions here, as
    it does in the API; custom views call `require_admin_o_propietario`.
    """

    def has_module_permission(self, request) -> bool:
        return es_admin_o_propietario(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return es_admin_o_propietario(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return es_admin_o_propietario(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return es_admin_o_propietario(request.user)

    def require_admin_o_propietario(self, request) -> None:
        if not es_admin_o_propietario(request.user):
            raise PermissionDenied
