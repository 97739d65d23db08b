from django.urls import path
from rest_framework_simplejwt.views import TokenRefreshView

from usuarios.views import LoginView, MeView

app_name = "usuarios"

urlpatterns = [
    # Uses SIMPLE_JWT's TOKEN_*_SERIALIZER: the tenant-bound ones in core.authentication.
    path("token/", LoginView.as_view(), name="token_obtain"),
    path("token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("me/", MeView.as_view(), name="me"),
]
