from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from usuarios.serializers import AccessTokenSerializer, MeSerializer, TokenPairSerializer
from usuarios.throttling import LoginAccountThrottle, LoginAddressThrottle, LoginThrottled


class LoginView(TokenObtainPairView):
    """An access and refresh token pair for the e-mail and password of this clinic.

    Too many failed attempts from one address or on one account: 429 with Retry-After.
    """

    throttle_classes = [LoginAddressThrottle, LoginAccountThrottle]

    def throttled(self, request, wait):
        raise LoginThrottled(wait)

    @extend_schema(responses=TokenPairSerializer)
    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except AuthenticationFailed:
            for throttle in self.get_throttles():
                throttle.failure_record(request, self)
            raise


class RefreshView(TokenRefreshView):
    """A new access token for a refresh token of this clinic."""

    @extend_schema(responses=AccessTokenSerializer)
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class MeView(APIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request):
        return Response(MeSerializer(request.user).data)
