"""URLs served on every schema: health, OpenAPI, docs, admin."""
from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.views import HealthView
from usuarios.admin_login import admin_login

urlpatterns = [
    path("api/health/", HealthView.as_view(), name="health"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/login/", admin_login),  # before the admin's own: its failed attempts are limited
    path("admin/", admin.site.urls),
]
