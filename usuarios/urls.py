from django.urls import path

from usuarios.views import LoginView, MeView, RefreshView

app_name = "usuarios"

urlpatterns = [
    # Uses SIMPLE_JWT's TOKEN_*_SERIALIZER: the tenant-bound ones in core.authentication.
    path("token/", LoginView.as_view(), name="token_obtain"),
    path("token/refresh/", RefreshView.as_view(), name="token_refresh"),
    path("me/", MeView.as_view(), name="me"),
]
