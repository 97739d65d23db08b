"""One error shape for the whole API: {"success": false, "code", "message", "details"}.

`code` is a stable English identifier a front end can switch on; `message` is
Spanish by default and follows Accept-Language.
"""
from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """Base of every error our services raise on purpose."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "error"
    message = _("La operación no pudo completarse.")

    def __init__(self, message=None, *, details: dict | None = None):
        if message is not None:
            self.message = message
        self.details = details or {}
        super().__init__(str(self.message))


class NotFoundError(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    message = _("No encontrado.")


class ConflictError(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"
    message = _("La operación entra en conflicto con el estado actual.")


def domain_error_for(code: str, message: str, details: dict | None = None) -> DomainError:
    """The error a job recorded (its code and message), raised again where its caller waits."""
    pending = [DomainError]
    while pending:
        cls = pending.pop()
        if cls.__dict__.get("code") == code:
            return cls(message, details=details)
        pending.extend(cls.__subclasses__())
    error = DomainError(message, details=details)
    error.code, error.status_code = code, status.HTTP_500_INTERNAL_SERVER_ERROR
    return error


def error_body(code: str, message, details: dict | None = None) -> dict:
    return {"success": False, "code": code, "message": str(message), "details": details or {}}


_DRF_CODES = {
    drf_exceptions.NotAuthenticated: ("not_authenticated", _("Se requiere autenticación.")),
    drf_exceptions.AuthenticationFailed: ("authentication_failed", None),
    drf_exceptions.PermissionDenied: ("permission_denied", _("No tiene permiso para realizar esta acción.")),
    drf_exceptions.NotFound: ("not_found", _("No encontrado.")),
    drf_exceptions.MethodNotAllowed: ("method_not_allowed", None),
    drf_exceptions.ValidationError: ("invalid", _("Los datos enviados no son válidos.")),
    drf_exceptions.ParseError: ("parse_error", None),
    drf_exceptions.UnsupportedMediaType: ("unsupported_media_type", None),
    drf_exceptions.Throttled: ("throttled", None),
}


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error, ours or DRF's, in one shape."""
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # a bug: Django's 500 handler logs it and answers handler500

    for exc_class, (code, message) in _DRF_CODES.items():
        if isinstance(exc, exc_class):
            break
    else:
        code, message = exc.default_code, None
    details = {}
    if isinstance(exc, drf_exceptions.ValidationError):
        details = {"fields": exc.detail}
    elif isinstance(exc.detail, dict):
        # simplejwt puts its own code and message in the detail dict
        code = str(exc.detail.get("code", code))
        message = message or exc.detail.get("detail")
    if message is None:
        message = exc.detail if isinstance(exc.detail, str) else exc.default_detail
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    return Response(error_body(code, message, details), status=exc.status_code, headers=headers)


def json_404(request, exception=None):
    return JsonResponse(error_body("not_found", _("Recurso no encontrado.")), status=404)


def json_500(request):
    return JsonResponse(error_body("server_error", _("Error interno del servidor.")), status=500)
