"""One error shape for the whole API: {"success": false, "code", "message", "details"}.

`code` is a stable English identifier a front end can switch on; `message` is
Spanish by default and follows Accept-Language.

Two doors lead here: DRF's EXCEPTION_HANDLER (`exception_handler`) for what a DRF view
raises, and the URLConfs' handler400/404/500 (`json_400`, `json_404`, `json_500`) for
what Django answers itself, outside any DRF view: a view of its own, or a middleware
(CsrfViewMiddleware reads a form before the view runs). Both take the status, code and
message from `error_parts`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from itertools import islice
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, JsonResponse
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions as drf_exceptions
from rest_framework import status

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


class TooManyFieldsError(DomainError):
    code = "too_many_fields"
    message = _("La petición tiene demasiados campos.")


class TooManyFilesError(DomainError):
    code = "too_many_files"
    message = _("La petición tiene demasiados archivos.")


class RequestTooLargeError(DomainError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE  # as an oversized restore upload
    code = "request_too_large"
    message = _("La petición supera el tamaño máximo permitido.")


def request_limit_error(exc: BaseException) -> DomainError | None:
    """Django's refusal of a request past a DATA_UPLOAD_* limit as the API answers it, with the
    limit; None for anything else.

    Django raises these (SuspiciousOperation subclasses) while it reads a query string or a
    body, in a DRF parser or wherever else request.GET, POST, FILES or body is first read,
    and would answer its HTML 400 page.
    """
    if isinstance(exc, TooManyFieldsSent):
        return TooManyFieldsError(details={"max_fields": settings.DATA_UPLOAD_MAX_NUMBER_FIELDS})
    if isinstance(exc, TooManyFilesSent):
        return TooManyFilesError(details={"max_files": settings.DATA_UPLOAD_MAX_NUMBER_FILES})
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLargeError(details={"max_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE})
    return None


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


# Details often carry the client's own input (a model label from a restore file, a
# value a field refused), and they are echoed in error bodies and kept forever in the
# append-only audit log: both keep a bounded excerpt of them.
DETAILS_MAX_STRING = 500
DETAILS_MAX_ITEMS = 200
DETAILS_MAX_DEPTH = 6
DETAILS_MAX_JSON = 16 * 1024
MESSAGE_MAX = 1000


def _string_bounded(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    # What was cut stays visible, and how much: "aaa…[+1048076]".
    return f"{text[:limit]}…[+{len(text) - limit}]", True


def _bounded(value: Any, depth: int) -> tuple[Any, bool]:
    if isinstance(value, Promise):
        value = str(value)
    if isinstance(value, str):
        return _string_bounded(value, DETAILS_MAX_STRING)
    if isinstance(value, bytes):
        return _bounded(value.decode("utf-8", "replace"), depth)
    if isinstance(value, dict | list | tuple | set | frozenset) and depth >= DETAILS_MAX_DEPTH:
        return "…", True
    if isinstance(value, dict):
        items, cut = {}, len(value) > DETAILS_MAX_ITEMS
        for key, item in islice(value.items(), DETAILS_MAX_ITEMS):
            key, key_cut = _bounded(key, depth + 1) if isinstance(key, str) else (key, False)
            items[key], item_cut = _bounded(item, depth + 1)
            cut = cut or key_cut or item_cut
        return items, cut
    if isinstance(value, list | tuple | set | frozenset):
        items, cut = [], len(value) > DETAILS_MAX_ITEMS
        for item in islice(value, DETAILS_MAX_ITEMS):
            item, item_cut = _bounded(item, depth + 1)
            items.append(item)
            cut = cut or item_cut
        if len(value) > DETAILS_MAX_ITEMS:
            items.append(f"…[+{len(value) - DETAILS_MAX_ITEMS}]")
        return items, cut
    return value, False


def details_bounded(details: dict | None) -> dict:
    """`details` with long strings, long lists and deep nesting cut, and at most
    DETAILS_MAX_JSON characters of JSON; `"truncated": true` says something was cut."""
    if not details:
        return {}
    bounded, cut = _bounded(details, 0)
    if not isinstance(bounded, dict):
        bounded = {"value": bounded}
    text = json.dumps(bounded, ensure_ascii=False, default=str)
    if len(text) > DETAILS_MAX_JSON:
        # Still too big in sum: keep the start of its JSON text, as text. Half the
        # bound, since that text's quotes are escaped again when it is stored or sent.
        return {"truncated": True, "preview": _string_bounded(text, DETAILS_MAX_JSON // 2)[0]}
    return {**bounded, "truncated": True} if cut else bounded


def error_body(code: str, message, details: dict | None = None) -> dict:
    return {
        "success": False,
        "code": code,
        "message": _string_bounded(str(message), MESSAGE_MAX)[0],
        "details": details_bounded(details),
    }


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


# simplejwt's own messages, by the code it gives them: English only, since its catalog
# is not loaded (not an installed app). Ours (token_wrong_tenant…) pass through.
_SIMPLEJWT_MESSAGES = {
    "token_not_valid": _("El token no es válido o ha expirado."),
    "bad_authorization_header": _("La cabecera Authorization debe tener la forma «Bearer <token>»."),
    "user_not_found": _("El usuario del token no existe."),
    "user_inactive": _("El usuario está inactivo."),
    "password_changed": _("La contraseña del usuario cambió: inicie sesión de nuevo."),
}


@dataclass(frozen=True)
class ErrorParts:
    """What the API answers for an error raised on purpose (ours, DRF's, simplejwt's)."""

    status: int
    code: str
    message: Any
    details: dict
    headers: dict


def error_parts(exc: BaseException) -> ErrorParts | None:
    """The status, code, message and details of an error the API answers on purpose; None for a bug."""
    exc = request_limit_error(exc) or exc
    if isinstance(exc, DomainError):
        return ErrorParts(exc.status_code, exc.code, exc.message, exc.details, {})
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None

    for exc_class, (code, message) in _DRF_CODES.items():
        if isinstance(exc, exc_class):
            break
    else:
        code, message = exc.default_code, None
    details = {}
    if isinstance(exc, drf_exceptions.ValidationError):
        details = {"fields": exc.detail}
    elif isinstance(exc, drf_exceptions.Throttled) and exc.wait is not None:
        # Also in the body: a front end on another origin cannot read Retry-After
        # unless CORS exposes it.
        details = {"retry_after": int(exc.wait)}
    elif isinstance(exc.detail, dict):
        # simplejwt puts its own code and message in the detail dict
        code = str(exc.detail.get("code", code))
        message = message or _SIMPLEJWT_MESSAGES.get(code) or exc.detail.get("detail")
    if message is None:
        message = exc.detail if isinstance(exc.detail, str) else exc.default_detail
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    return ErrorParts(exc.status_code, code, message, details, headers)


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error, ours or DRF's, in one shape."""
    parts = error_parts(exc)
    if parts is None:
        return None  # a bug: Django's 500 handler logs it and answers handler500
    if isinstance(exc, SuspiciousOperation):
        # Answered here, it never reaches Django's handler, which logs every one to django.security.
        logging.getLogger(f"django.security.{type(exc).__name__}").error(str(exc), extra={"status_code": parts.status})
    from rest_framework.response import Response

    return Response(error_body(parts.code, parts.message, parts.details), status=parts.status, headers=parts.headers)


def json_400(request, exception=None):
    """handler400: what Django refuses outside DRF's views (a body past DATA_UPLOAD_*, a bad request)."""
    parts = error_parts(exception) if exception is not None else None
    if parts is None:
        return JsonResponse(error_body("bad_request", _("La petición no es válida.")), status=400)
    return JsonResponse(error_body(parts.code, parts.message, parts.details), status=parts.status)


def json_404(request, exception=None):
    return JsonResponse(error_body("not_found", _("Recurso no encontrado.")), status=404)


def json_500(request):
    return JsonResponse(error_body("server_error", _("Error interno del servidor.")), status=500)
