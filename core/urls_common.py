"""URLs served on every schema: health, OpenAPI, docs, admin."""
from django.contrib import admin
from django.urls import path

from core.views import HealthView
from usuarios.admin_login import admin_login


class _SpectacularView:
    """drf-spectacular's view `name`, made at its first request: its generator and plumbing then
    load where the schema is served, not with every URLconf (manage.py check, each command).
    A schema generator finds it as it finds any DRF view, by its `cls` and `initkwargs`."""

    csrf_exempt = True  # as DRF's as_view() makes every view

    def __init__(self, name: str, **initkwargs):
        self.name = name
        self.initkwargs = initkwargs
        self._view = None
        # Named as the view it stands for, wherever URLs are listed (show_urls, a resolver match).
        self.__module__, self.__name__, self.__qualname__ = "drf_spectacular.views", name, name

    @property
    def cls(self):
        from drf_spectacular import views

        return getattr(views, self.name)

    def __call__(self, request, *args, **kwargs):
        if self._view is None:
            self._view = self.cls.as_view(**self.initkwargs)
        return self._view(request, *args, **kwargs)


urlpatterns = [
    path("api/health/", HealthView.as_view(), name="health"),
    path("api/schema/", _SpectacularView("SpectacularAPIView"), name="schema"),
    path("api/docs/", _SpectacularView("SpectacularSwaggerView", url_name="schema"), name="docs"),
    path("admin/login/", admin_login),  # before the admin's own: its failed attempts are limited
    path("admin/", admin.site.urls),
]
