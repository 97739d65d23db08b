from django.db import connection
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import error_body
from core.openapi_errors import error_response


class HealthView(APIView):
    """Liveness for Render: answers 200 only when the database answers."""

    authentication_classes = []
    permission_classes = [AllowAny]
    clinic_scoped = False  # the platform's: no X-Tenant-ID in its OpenAPI

    @extend_schema(responses={200: inline_serializer("Health", {"status": serializers.CharField()}),
                              503: error_response(503, "La base de datos no responde.")})
    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any database failure means "unhealthy"
            return Response(error_body("database_unavailable", _("La base de datos no responde.")), status=503)
        return Response({"status": "ok"})
