from django.urls import include, path

from backups.platform_admin import platform_backups
from core.urls_common import urlpatterns as common_urlpatterns

handler400 = "core.exceptions.json_400"
handler404 = "core.exceptions.json_404"
handler500 = "core.exceptions.json_500"

urlpatterns = [
    # The platform's page of every clinic's backups, inside the public admin (before its catch-all).
    path("admin/plataforma/backups/", include(platform_backups.urls)),
    *common_urlpatterns,
]
