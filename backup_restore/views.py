"""GET /api/backup/ (streamed JSON download) and POST /api/restore/ (multipart upload)."""
from __future__ import annotations

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiRequest, OpenApiResponse, extend_schema
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backup_restore import errors, services
from backup_restore.serializers import ExportQuerySerializer, RestoreRequestSerializer, RestoreResultSerializer
from bitacora.services import AuditContext
from core.openapi_errors import error_response
from usuarios.models import Rol
from usuarios.permissions import IsAdminOrPropietario


# The JSON backup's format (README, "Formato del respaldo JSON"), for the export's 200.
BACKUP_DOCUMENT = {
    "type": "object",
    "required": ["format", "version", "tenant", "created_at", "migrations", "models", "data"],
    "properties": {
        "format": {"type": "string", "enum": ["clinica-tenant-data"]},
        "version": {"type": "integer"},
        "tenant": {"type": "object", "properties": {"schema": {"type": "string"}, "name": {"type": "string"}}},
        "created_at": {"type": "string", "format": "date-time"},
        "migrations": {"type": "object", "additionalProperties": {"type": "string"}},
        "models": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {"count": {"type": "integer"}, "restore": {"type": "boolean"}}}},
        "excluded": {"type": "object", "additionalProperties": {"type": "string"}},
        "data": {"type": "array", "items": {
            "type": "object", "required": ["model", "fields", "rows"],
            "properties": {"model": {"type": "string"}, "fields": {"type": "array", "items": {"type": "string"}},
                           "rows": {"type": "array", "items": {"type": "array"}}}}},
    },
}


class TenantDataExportView(APIView):
    """Download every tenant app's data as one JSON file (`?compress=gzip` for .json.gz)."""

    permission_classes = [IsAdminOrPropietario]

    @extend_schema(
        parameters=[
            ExportQuerySerializer,
            OpenApiParameter("Content-Disposition", str, OpenApiParameter.HEADER, response=[200],
                             description='attachment; filename="backup_<esquema>_<fecha>.json[.gz]"'),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(BACKUP_DOCUMENT, description="El archivo JSON, en streaming."),
            (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY, description="Con ?compress=gzip."),
            409: error_response(409, "Ya hay un backup o una restauración en curso para esta clínica."),
        },
    )
    def get(self, request):
        query = ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        export = services.tenant_data_export(
            context=AuditContext.from_request(request), compress=query.validated_data["compress"] == "gzip"
        )
        response = StreamingHttpResponse(export.chunks, content_type=export.content_type)
        response["Content-Disposition"] = f'attachment; filename="{export.file_name}"'
        response["Cache-Control"] = "no-store"
        return response


class TenantDataRestoreView(APIView):
    """Restore a file from GET /api/backup/ into this clinic, in one transaction."""

    permission_classes = [IsAdminOrPropietario]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        # Only multipart carries a file (the form parser is there to answer "not a file", 400),
        # and the file is a backup from GET /api/backup/, as JSON or gzip.
        request={"multipart/form-data": OpenApiRequest(
            RestoreRequestSerializer, encoding={"backup_file": {"contentType": "application/json, application/gzip"}})},
        responses={
            200: RestoreResultSerializer,
            409: error_response(409, "Otro backup o restauración en curso (`backup_in_progress`), o tablas ocupadas "
                                     "por otras operaciones (`restore_tables_busy`): reintentable."),
            413: error_response(413),
        },
    )
    def post(self, request):
        context = AuditContext.from_request(request)
        limit = settings.RESTORE_MAX_UPLOAD_BYTES
        with services.tenant_data_restore_audited(context=context, details={"file_name": ""}):
            # Refuse before reading the body when the client announces its size.
            if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
                raise errors.UploadTooLargeError(details={"max_bytes": limit})
            params = RestoreRequestSerializer(data=request.data)
            params.is_valid(raise_exception=True)
            upload = params.validated_data["backup_file"]
            if upload.size > limit:
                raise errors.UploadTooLargeError(details={"max_bytes": limit, "size": upload.size})
            if params.validated_data["allow_other_tenant"] and request.user.rol != Rol.ADMIN:
                raise errors.OtherTenantNotAllowedError()
        result = services.tenant_data_restore(
            context=context,
            source=upload.open("rb"),
            file_name=upload.name,
            replace=params.validated_data["replace"],
            dry_run=params.validated_data["dry_run"],
            allow_other_tenant=params.validated_data["allow_other_tenant"],
        )
        return Response(RestoreResultSerializer(result.as_dict()).data)
