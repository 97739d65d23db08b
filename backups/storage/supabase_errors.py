"""What Supabase Storage's answers mean, as the domain errors of backups.errors.

The server answers most errors with HTTP 400 and the real status in the body
(`{"statusCode": "404", "error": "not_found", ...}`); newer servers add a `code`
(NoSuchKey, NoSuchBucket...). storage3 raises StorageApiError for them; a streamed
request's answer goes through raise_for_status to the same shape. storage3 and httpx are
imported where they are needed (backups.storage.supabase loads them with its first request).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from backups.errors import (
    StorageBucketMissingError,
    StorageError,
    StorageObjectExistsError,
    StorageObjectMissingError,
    StoragePayloadTooLargeError,
    StorageUnauthorizedError,
    StorageUnavailableError,
)

_ERROR_BODY_LIMIT = 64 * 1024  # an error answer is a small JSON; a proxy's HTML page is cut here
_ERROR_READ_CHUNK = 8 * 1024

_UNAUTHORIZED_CODES = {"InvalidJWT", "AccessDenied", "InvalidSignature", "SignatureDoesNotMatch", "Unauthorized"}
_UNAVAILABLE_STATUSES = {"502", "503", "504", "544"}
_UNAVAILABLE_CODES = {"DatabaseTimeout", "DatabaseConnectionLimit", "DatabaseReadOnly", "SlowDown", "LockTimeout"}

if TYPE_CHECKING:
    import httpx
    from storage3.exceptions import StorageApiError


def raise_for_status(response: httpx.Response) -> None:
    """Raise a StorageApiError for an error answer to a streamed request, as storage3 does for its own."""
    if response.is_success:
        return
    from storage3.exceptions import StorageApiError

    body = b""
    for chunk in response.iter_bytes(_ERROR_READ_CHUNK):
        body += chunk
        if len(body) >= _ERROR_BODY_LIMIT:
            break
    try:
        data = json.loads(body)
        error = StorageApiError(data["message"], data["error"], data["statusCode"])
    except (KeyError, TypeError, ValueError):
        text = body[:300].decode(errors="replace")
        error = StorageApiError(f"Unable to parse error message: {text}", "InternalError", response.status_code)
        data = None
    error.body = data  # for _error_parts: storage3's error keeps no "code" field
    raise error


def api_error_fields(exc: StorageApiError) -> dict[str, Any]:
    status, error, code, message = _error_parts(exc)
    fields = {"status": status, "error": error, "message": message[:300]}
    if code:
        fields["code"] = code
    return fields


def _error_parts(exc: StorageApiError) -> tuple[str, str, str, str]:
    """(status in the body, legacy error, new error code, message) of a storage3 error."""
    status = str(exc.status)
    error = str(exc.code or "")
    message = str(exc.message or "")
    # storage3 keeps only the legacy "error" field; newer servers also send a
    # "code" (NoSuchKey, NoSuchBucket…) that is worth reading when it is there.
    body = getattr(exc, "body", None)
    if body is None:
        import httpx

        response = _http_response(exc)
        try:
            body = response.json() if response is not None else None
        except (httpx.ResponseNotRead, ValueError):
            body = None
    code = str(body.get("code") or "") if isinstance(body, dict) else ""
    return status, error, code, message


def domain_error_class(exc: StorageApiError) -> type[StorageError]:
    """The domain error for a storage3 error, from the status in the body, not the HTTP status."""
    status, error, code, message = _error_parts(exc)
    lowered = f"{error} {message}".lower()
    if code == "NoSuchBucket" or error.lower() == "bucket not found" or (status == "404" and "bucket" in lowered):
        return StorageBucketMissingError
    if code == "NoSuchKey" or error == "not_found" or status == "404":
        return StorageObjectMissingError
    if status == "409" or error == "Duplicate" or code in ("KeyAlreadyExists", "ResourceAlreadyExists", "BucketAlreadyExists"):
        return StorageObjectExistsError
    if status == "413" or code == "EntityTooLarge" or error == "Payload too large":
        return StoragePayloadTooLargeError
    # Older servers answer a bad JWT with statusCode "400" and the JWT library's message.
    if status in ("401", "403") or code in _UNAUTHORIZED_CODES or error in _UNAUTHORIZED_CODES or "jwt" in lowered:
        return StorageUnauthorizedError
    if status in _UNAVAILABLE_STATUSES or code in _UNAVAILABLE_CODES:
        return StorageUnavailableError
    return StorageError


def _http_response(exc: BaseException) -> httpx.Response | None:
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response
        seen = seen.__cause__ or seen.__context__
    return None


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
