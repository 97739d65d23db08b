"""The backups API (seed 000), and the download responses it shares with the admin."""
import gzip
from enum import Enum

from django.http import FileResponse, HttpRequest, StreamingHttpResponse
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backups.jobs.enqueue import backup_enqueue, job_wait, restore_enqueue
from backups.models import BackupRecord
from backups.selectors import backup_get, backup_list, restore_job_get
from backups.serializers import (
    BackupCreatedSerializer,
    BackupCreateSerializer,
    BackupInProgressSerializer,
    BackupKeepSerializer,
    BackupListQuerySerializer,
    BackupRecordSerializer,
    BackupRestoredSerializer,
    BackupRestoreSerializer,
    RestoreInProgressSerializer,
    RestoreJobSerializer,
)
from backups.services import backup_delete, backup_files_archive, backup_open, backup_set_keep
from backups.storage.objects import COPY_CHUNK_SIZE
from bitacora.services import AuditContext
from core.exceptions import domain_error_for
from core.openapi_errors import error_response
from usuarios.permissions import IsAdminOrPropietario

# sha256 of the body exactly as sent (before any Content-Encoding is undone).
CHECKSUM_HEADER = "X-Checksum-SHA256"
# sha256 of the SQL itself: what a browser hands the page, and what `gunzip` gives.
SQL_CHECKSUM_HEADER = "X-SQL-SHA256"
GZIP_MEDIA_TYPES = {"application/gzip", "application/x-gzip"}
GZIP_FORMATS = {"gz", "gzip", "sql.gz"}

# The history: an array, or a page of it when ?limit= is given (see BackupHistoryListView).
_BACKUP_RECORD = {"$ref": "#/components/schemas/BackupRecord"}
HISTORY_RESPONSE = OpenApiResponse(
    {
        "oneOf": [
            {"type": "array", "items": _BACKUP_RECORD, "description": "Sin `limit`: todos, más reciente primero."},
            {
                "type": "object",
                "description": "Con `limit` (y `offset`): una página.",
                "required": ["count", "results"],
                "properties": {
                    "count": {"type": "integer"},
                    "next": {"type": "string", "format": "uri", "nullable": True},
                    "previous": {"type": "string", "format": "uri", "nullable": True},
                    "results": {"type": "array", "items": _BACKUP_RECORD},
                },
            },
        ]
    },
    description="Un arreglo sin `limit`; una página `{count, next, previous, results}` con `limit`.",
)
LOCATION = OpenApiParameter("Location", str, OpenApiParameter.HEADER, response=[202], required=True,
                            description="Dónde consultar el estado del trabajo hasta que termine.")
STORAGE_ERRORS = {502: error_response(502), 503: error_response(503)}


class DownloadForm(str, Enum):
    GZ = "gz"  # the stored .sql.gz, unchanged: asked for explicitly
    ENCODED = "encoded"  # the stored bytes as Content-Encoding: gzip, so the client ends up with the SQL
    SQL = "sql"  # decompressed here, for a client that does not take gzip


def _weighted(header: str) -> dict[str, float]:
    """`a;q=0.5, b` → {"a": 0.5, "b": 1.0} (lower-cased; a malformed weight counts as 0)."""
    weights = {}
    for item in header.split(","):
        name, *params = [part.strip() for part in item.split(";")]
        if not name:
            continue
        quality = 1.0
        for param in params:
            key, _sep, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        weights[name.lower()] = quality
    return weights


def download_form(request: HttpRequest) -> DownloadForm:
    """Which form of a backup a request gets (issue 11): .sql.gz only when asked for by name."""
    accept = _weighted(request.META.get("HTTP_ACCEPT", ""))
    if request.GET.get("format", "").lower() in GZIP_FORMATS or any(accept.get(kind, 0) > 0 for kind in GZIP_MEDIA_TYPES):
        return DownloadForm.GZ
    encodings = _weighted(request.META.get("HTTP_ACCEPT_ENCODING", ""))
    gzip_weight = encodings.get("gzip", encodings.get("x-gzip", encodings.get("*", 0)))
    return DownloadForm.ENCODED if gzip_weight > 0 else DownloadForm.SQL


def _decompressed(stored_file):
    with stored_file, gzip.GzipFile(fileobj=stored_file, mode="rb") as sql:
        while chunk := sql.read(COPY_CHUNK_SIZE):
            yield chunk


def backup_download_response(request: HttpRequest, backup: BackupRecord, stored_file) -> StreamingHttpResponse:
    """The backup as an attachment, streamed, with the checksum of what is sent (API and admin alike).

    Saved as `.sql` whatever the form. With Content-Encoding, Content-Length is the
    length of the gzip bytes on the wire, as HTTP defines it. Django's GZipMiddleware
    (not installed) leaves a response that already has a Content-Encoding alone.
    """
    form = download_form(request)
    sql_name = backup.file_name.removesuffix(".gz")
    if form is DownloadForm.SQL:
        response = StreamingHttpResponse(_decompressed(stored_file), content_type="application/octet-stream")
        response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=sql_name)
        if backup.sql_size is not None:  # unknown for backups made before it was recorded
            response["Content-Length"] = str(backup.sql_size)
        sent_sha256 = backup.sql_sha256
    elif form is DownloadForm.ENCODED:
        response = FileResponse(stored_file, as_attachment=True, filename=sql_name, content_type="application/octet-stream")
        response["Content-Encoding"] = "gzip"
        response["Content-Length"] = str(backup.file_size)
        sent_sha256 = backup.sha256
    else:
        response = FileResponse(stored_file, as_attachment=True, filename=backup.file_name, content_type="application/gzip")
        response["Content-Length"] = str(backup.file_size)
        sent_sha256 = backup.sha256
    if sent_sha256:
        response[CHECKSUM_HEADER] = sent_sha256
    if backup.sql_sha256:
        response[SQL_CHECKSUM_HEADER] = backup.sql_sha256
    patch_vary_headers(response, ("Accept", "Accept-Encoding"))
    return response


def backup_files_response(backup: BackupRecord, size: int, chunks) -> StreamingHttpResponse:
    """A backup's files as one tar archive, streamed, with its exact length (API and admin alike)."""
    response = StreamingHttpResponse(chunks, content_type="application/x-tar")
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=True, filename=backup.file_name.removesuffix(".sql.gz") + ".files.tar"
    )
    response["Content-Length"] = str(size)
    return response


class _BinaryDownloadView(APIView):
    """A download answers whatever Accept says (`application/gzip`, `?format=gz`…); errors stay JSON."""

    permission_classes = [IsAdminOrPropietario]

    def perform_content_negotiation(self, request, force=False):
        # DRF would answer 406 (or 404 for ?format=gz) as no renderer produces a file.
        return super().perform_content_negotiation(request, force=True)


class BackupHistoryListView(APIView):
    """GET /api/backups/history/: an array, newest first; paginated only when ?limit= is given."""

    permission_classes = [IsAdminOrPropietario]

    @extend_schema(operation_id="backups_history_list", parameters=[BackupListQuerySerializer],
                   responses={200: HISTORY_RESPONSE})
    def get(self, request):
        query = BackupListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        records = backup_list(backup_type=query.validated_data.get("backup_type"), status=query.validated_data.get("status"))
        if "limit" not in query.validated_data:
            return Response(BackupRecordSerializer(records, many=True).data)
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(records, request, view=self)
        return paginator.get_paginated_response(BackupRecordSerializer(page, many=True).data)


def _raise_if_failed(record) -> None:
    """A job that failed within the wait answers as it would have inline: its own error."""
    if record.status == record.Status.FAILED:
        raise domain_error_for(record.error_code, record.error, details={"id": record.pk})


class BackupCreateView(APIView):
    """POST /api/backups/create/: 201 when the backup finishes within the wait, else 202 and a Location to poll."""

    permission_classes = [IsAdminOrPropietario]
    # Every field is optional, so a form body (even a malformed one) would parse as "defaults" and
    # start a backup; JSON, as the front end sends, is refused unless it is an object (415/400).
    parser_classes = [JSONParser]

    @extend_schema(
        request=BackupCreateSerializer,
        parameters=[LOCATION],
        responses={201: BackupCreatedSerializer, 202: BackupInProgressSerializer,
                   409: error_response(409, "Ya hay un backup o una restauración en curso para esta clínica."),
                   500: error_response(500, "El backup falló (pg_dump); el registro queda `failed` con su error."),
                   **STORAGE_ERRORS},
    )
    def post(self, request):
        payload = BackupCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        backup = backup_enqueue(
            context=AuditContext.from_request(request),
            backup_type=payload.validated_data["backup_type"],
            created_by=request.user,
        )
        backup = job_wait(backup)
        _raise_if_failed(backup)
        data = BackupRecordSerializer(backup).data
        if backup.status == BackupRecord.Status.COMPLETED:
            message = (_("Backup creado con advertencias: %(warning)s") % {"warning": backup.warning} if backup.warnings
                       else _("Backup creado exitosamente"))
            return Response({"success": True, "message": message, "backup": data}, status=status.HTTP_201_CREATED)
        body = {"success": True, "message": _("El backup está en curso; consulte su estado en Location."), "backup": data}
        return Response(body, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": reverse("backups:backup_detail", args=[backup.pk])})


class BackupDetailView(APIView):
    permission_classes = [IsAdminOrPropietario]

    @extend_schema(responses=BackupRecordSerializer)
    def get(self, request, backup_id: int):
        return Response(BackupRecordSerializer(backup_get(backup_id=backup_id)).data)

    @extend_schema(responses={204: None, 409: error_response(409), **STORAGE_ERRORS})
    def delete(self, request, backup_id: int):
        backup_delete(context=AuditContext.from_request(request), backup_id=backup_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=BackupKeepSerializer, responses=BackupRecordSerializer)
    def patch(self, request, backup_id: int):
        payload = BackupKeepSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        backup = backup_set_keep(
            context=AuditContext.from_request(request), backup_id=backup_id, keep=payload.validated_data["keep"]
        )
        return Response(BackupRecordSerializer(backup).data)


class BackupDownloadView(_BinaryDownloadView):
    """GET …/download/: the SQL, saved as `.sql` (gzip-encoded on the wire when accepted); `?format=gz`
    or `Accept: application/gzip` for the stored .sql.gz unchanged."""

    @extend_schema(
        parameters=[
            # Not an enum: download_form() takes gz, gzip or sql.gz in any case, and any other value is the SQL.
            OpenApiParameter("format", str, required=False,
                             description="gz (o gzip, sql.gz; sin distinguir mayúsculas): el .sql.gz almacenado, "
                                         "sin cambios. Otro valor, o ninguno: el SQL."),
            OpenApiParameter(CHECKSUM_HEADER, str, OpenApiParameter.HEADER, response=[200], required=True,
                             description="sha256 de los bytes enviados, en hexadecimal."),
            OpenApiParameter("X-SQL-SHA256", str, OpenApiParameter.HEADER, response=[200], required=False,
                             description="sha256 del SQL sin comprimir (backups hechos desde que se registra)."),
            OpenApiParameter("Content-Disposition", str, OpenApiParameter.HEADER, response=[200], required=True,
                             description='attachment; filename="backup_<esquema>_<fecha>.sql" (o .sql.gz con format=gz)'),
        ],
        responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="El SQL."),
                   (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY, description="El .sql.gz almacenado."),
                   409: error_response(409, "El backup no está completo."), **STORAGE_ERRORS},
    )
    def get(self, request, backup_id: int):
        backup, stored_file = backup_open(context=AuditContext.from_request(request), backup_id=backup_id)
        return backup_download_response(request, backup, stored_file)


class BackupFilesView(_BinaryDownloadView):
    """GET …/files/: the backup's patient files as one tar archive, streamed."""

    @extend_schema(responses={(200, "application/x-tar"): OpenApiResponse(OpenApiTypes.BINARY)})
    def get(self, request, backup_id: int):
        backup, size, chunks = backup_files_archive(context=AuditContext.from_request(request), backup_id=backup_id)
        return backup_files_response(backup, size, chunks)


class BackupRestoreView(APIView):
    """POST /api/backups/history/{id}/restore/ {"confirm": "<schema>"}: put the clinic back to that backup.

    200 when the restore finishes within the wait, else 202 and the restore job's Location to poll."""

    permission_classes = [IsAdminOrPropietario]

    @extend_schema(
        request=BackupRestoreSerializer,
        parameters=[LOCATION],
        responses={200: BackupRestoredSerializer, 202: RestoreInProgressSerializer,
                   409: error_response(409, "Otra operación en curso, tablas ocupadas o un backup más nuevo que el código."),
                   **STORAGE_ERRORS},
    )
    def post(self, request, backup_id: int):
        payload = BackupRestoreSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        job = restore_enqueue(context=AuditContext.from_request(request), backup_id=backup_id,
                              confirm=payload.validated_data["confirm"], created_by=request.user)
        job = job_wait(job)
        _raise_if_failed(job)
        restore = RestoreJobSerializer(job).data
        if job.status == job.Status.COMPLETED:
            backup = BackupRecordSerializer(backup_get(backup_id=backup_id)).data
            return Response({"success": True, "message": _("Clínica restaurada desde el backup"), "backup": backup,
                             "restore": restore})
        body = {"success": True, "message": _("La restauración está en curso; consulte su estado en Location."),
                "restore": restore}
        return Response(body, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": reverse("backups:restore_detail", args=[job.pk])})


class RestoreJobDetailView(APIView):
    """GET /api/backups/restores/{id}/: a restore's status, phase, progress, times and error."""

    permission_classes = [IsAdminOrPropietario]

    @extend_schema(responses=RestoreJobSerializer)
    def get(self, request, job_id: int):
        return Response(RestoreJobSerializer(restore_job_get(job_id=job_id)).data)
