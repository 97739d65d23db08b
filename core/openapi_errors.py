"""The API's one error shape as the OpenAPI schema documents it, for the views' extend_schema.

Apart from core.openapi (the schema's generator side): the views import this at start, while
drf-spectacular's AutoSchema and its plumbing load only where a schema is generated."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (core.exceptions.error_body)."""

    success = serializers.BooleanField(help_text="Siempre false.")
    code = serializers.CharField(help_text="Identificador estable en inglés (p. ej. `invalid_value`, `backup_in_progress`).")
    message = serializers.CharField(help_text="Mensaje para personas; en español salvo Accept-Language.")
    details = serializers.DictField(help_text="Qué falló: campo, modelo, fila, límite… (acotado en tamaño).")


ERROR_DESCRIPTIONS = {
    400: "Datos no válidos: `details` dice cuáles y por qué.",
    401: "Sin token, token no válido o de otra clínica, credenciales incorrectas, o sin clínica (X-Tenant-ID).",
    403: "El rol del usuario no permite esta operación (sólo admin y propietario).",
    404: "Clínica desconocida (X-Tenant-ID) o recurso inexistente.",
    409: "Conflicto con el estado actual (p. ej. otro backup o restauración en curso): reintentable.",
    413: "El archivo (o lo que ocupa descomprimido) supera el máximo: `details` lo dice.",
    415: "Content-Type no admitido por esta operación.",
    429: "Demasiados intentos fallidos: espere `details.retry_after` segundos (también en Retry-After).",
    502: "El almacenamiento de backups respondió con un error.",
    503: "Un servicio necesario (base de datos, almacenamiento, pg_dump) no está disponible.",
}


def error_response(status: int, description: str | None = None) -> OpenApiResponse:
    """An error answer in the one error shape, for extend_schema(responses=…)."""
    return OpenApiResponse(ErrorSerializer, description=description or ERROR_DESCRIPTIONS[status])
