from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission


class IsAdminOrPropietario(BasePermission):
    """Only a clinic's admin or owner: backups, restores, the audit log."""

    message = _("Sólo el administrador o el propietario de la clínica pueden realizar esta acción.")

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.es_administrativo)
