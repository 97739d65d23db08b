from core.urls_common import urlpatterns as common_urlpatterns

handler404 = "core.exceptions.json_404"
handler500 = "core.exceptions.json_500"

urlpatterns = [*common_urlpatterns]
