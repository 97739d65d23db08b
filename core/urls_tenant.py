from django.urls import include, path

from core.urls_common import urlpatterns as common_urlpatterns

handler400 = "core.exceptions.json_400"
handler404 = "core.exceptions.json_404"
handler500 = "core.exceptions.json_500"

urlpatterns = [
    path("api/auth/", include("usuarios.urls")),
    path("api/bitacora/", include("bitacora.urls")),
    path("api/backups/", include("backups.urls")),
    path("api/", include("backup_restore.urls")),
    *common_urlpatterns,
]
