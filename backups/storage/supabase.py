"""Supabase Storage as a Django storage backend: backups, and patient files in a bucket of their own.

Built on storage3 (supabase-py's storage client) over one lazily created httpx
client. Uploads stream from the file on disk or file object; downloads stream
through a short-lived signed URL, so memory stays bounded whatever the size of
a backup. Every failure, from the server or from the network, comes out as one
of the domain errors of ``backups.errors`` (what the server's answers mean is
``backups.storage.supabase_errors``). storage3 and httpx load with the first request, not
with the storage (about 250 ms: a command that never reaches the bucket does not pay it).
"""
from __future__ import annotations

import io
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.base import File
from django.core.files.storage import Storage
from django.utils.deconstruct import deconstructible

from backups.errors import (
    StorageBucketMissingError,
    StorageError,
    StorageObjectExistsError,
    StorageObjectMissingError,
    StorageUnauthorizedError,
    StorageUnavailableError,
)
from backups.storage.supabase_errors import api_error_fields, describe, domain_error_class, raise_for_status

if TYPE_CHECKING:
    import httpx
    from storage3 import SyncStorageClient
    from storage3._sync.file_api import SyncBucketProxy

CHUNK_SIZE = 64 * 1024
SIGNED_URL_TTL = 60  # seconds: long enough to start the download, too short to be worth leaking
# Per-operation limits (connect, each read, each write), not a total: a long
# upload is fine as long as bytes keep moving.
TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0  # also the wait for a free connection of the pool
_CLIENT_LOCK = threading.Lock()
LIST_PAGE = 1000  # names per list request (the server's own default is 100)


@deconstructible
class SupabaseStorage(Storage):
    """Objects in a private Supabase Storage bucket; a save never replaces one (upsert is off)."""

    def __init__(self, url: str = "", key: str = "", bucket: str = "backups"):
        self.url = url
        self.key = key
        self.bucket = bucket
        self._client: SyncStorageClient | None = None
        self._bucket_ready = False

    # Django's Storage API

    def _save(self, name: str, content: Any) -> str:
        """Upload ``content`` under ``name``, streamed; never overwrites."""
        key = _clean_key(name)
        self._ensure_bucket()
        source = _upload_source(content)
        with self._translate_errors("save", key):
            self._files().upload(
                _quoted(key),
                source,
                # storage3 sends these as form fields and headers: strings only.
                {"content-type": _content_type(key), "upsert": "false"},
            )
        # A write only succeeds in an existing bucket, whoever created it.
        self._bucket_ready = True
        return key

    def _open(self, name: str, mode: str = "rb") -> File:
        """Open ``name`` for reading, streamed through a short-lived signed URL."""
        if mode != "rb":
            raise ValueError("SupabaseStorage only opens objects for reading in binary mode ('rb').")
        key = _clean_key(name)
        client = self._storage()
        with self._translate_errors("open", key):
            signed = self._files().create_signed_url(_quoted(key), SIGNED_URL_TTL)
            # The signed URL carries its own token: the key is not sent again.
            response = client.session.send(client.session.build_request("GET", signed["signedURL"]), stream=True)
            try:
                raise_for_status(response)
            except BaseException:
                response.close()
                raise
        stream = io.BufferedReader(_ResponseStream(response, self, key), buffer_size=CHUNK_SIZE)
        opened = File(stream, name=key)
        if response.headers.get("content-length", "").isdigit():
            opened.size = int(response.headers["content-length"])
        return opened

    def delete(self, name: str) -> None:
        """Delete ``name``; a missing object (or bucket) is not an error."""
        key = _clean_key(name)
        try:
            with self._translate_errors("delete", key):
                # The server answers 200 with the list of what it removed, [] if nothing.
                self._files().remove([key])
        except (StorageObjectMissingError, StorageBucketMissingError):
            pass

    def exists(self, name: str) -> bool:
        """Whether an object called ``name`` is stored."""
        try:
            self._info("exists", name)
        except (StorageObjectMissingError, StorageBucketMissingError):
            # Nothing exists in a bucket that does not exist yet; the first save
            # creates it. (The info route takes an invalid key for an anonymous
            # caller, so a bad key also lands here; every write reports it.)
            return False
        return True

    def size(self, name: str) -> int:
        """Size of ``name`` in bytes."""
        return self._size_of(self._info("size", name), name)

    def get_modified_time(self, name: str) -> datetime:
        """When ``name`` was last written, as the server recorded it (aware, UTC).

        The object's info carries it (``last_modified``); a server whose info lacks it makes
        this unsupported, as Django's Storage API has it: a backup then reads every file.
        """
        modified = _modified_of(self._info("get_modified_time", name))
        if modified is None:
            raise NotImplementedError("This Supabase Storage server gives no object modification time.")
        return modified

    def size_and_modified_time(self, name: str) -> tuple[int, datetime | None]:
        """size() and get_modified_time() (None where unsupported) from one answer of the server:
        half the round trips for a backup that looks at every file, and the two describe the same
        version of the object."""
        info = self._info("size_and_modified_time", name)
        return self._size_of(info, name), _modified_of(info)

    def _size_of(self, info: dict[str, Any], name: str) -> int:
        size = info.get("size")
        if size is None:
            # Older servers only put it in the storage metadata.
            size = (info.get("metadata") or {}).get("size")
        if size is None:
            raise StorageError(details=self._details("size", _clean_key(name), reason="no size in object info"))
        return int(size)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """The folders and objects directly under path, by name, every page of them (the clinic keys' folder is read so)."""
        prefix = str(path).replace("\\", "/").strip("/")
        folders: list[str] = []
        objects: list[str] = []
        offset = 0
        while True:
            try:
                with self._translate_errors("list", prefix or None):
                    page = self._files().list(prefix, {"limit": LIST_PAGE, "offset": offset})
            except StorageBucketMissingError:
                return [], []  # nothing is in a bucket not created yet
            for entry in page:
                # A folder is a name prefix, with no object row: no id.
                (objects if entry.get("id") else folders).append(entry["name"])
            if len(page) < LIST_PAGE:
                return folders, objects
            offset += LIST_PAGE

    # Client and bucket

    def _storage(self) -> SyncStorageClient:
        """The storage3 client, created on first use (settings import must not need the network)."""
        if self._client is None:
            with _CLIENT_LOCK:
                if self._client is None:
                    import httpx
                    from storage3 import SyncStorageClient

                    if not self.url or not self.key:
                        raise ImproperlyConfigured("SupabaseStorage needs both url and key.")
                    # Our own httpx client rather than storage3's default one, which
                    # sends the key as a default header on every request and follows
                    # redirects: the key goes only where storage3 puts it per request
                    # (never to the signed-URL download), never to a redirect's host
                    # (httpx drops Authorization there, not apikey), and the
                    # timeouts suit large transfers.
                    session = httpx.Client(
                        timeout=httpx.Timeout(TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS, pool=CONNECT_TIMEOUT_SECONDS),
                        follow_redirects=False,
                    )
                    self._client = SyncStorageClient(
                        f"{self.url.rstrip('/')}/storage/v1/",
                        {"apikey": self.key, "Authorization": f"Bearer {self.key}"},
                        http_client=session,
                    )
        return self._client

    def _files(self) -> SyncBucketProxy:
        """The storage3 file API of our bucket."""
        return self._storage().from_(self.bucket)

    def _ensure_bucket(self) -> None:
        """Create the bucket, private, unless it already exists."""
        if self._bucket_ready:
            return
        try:
            with self._translate_errors("create_bucket"):
                # Creating straight away is one request and parses no bucket
                # model (get_bucket's model rejects rows it does not expect).
                self._storage().create_bucket(self.bucket, options={"public": False})
        except StorageObjectExistsError:
            pass  # already there, or another process created it first
        except StorageUnauthorizedError as exc:
            if exc.details.get("status") != "403":
                raise  # 401: the key itself is wrong, no upload will get through
            # 403: a key may be allowed to write objects but not to create
            # buckets; let the upload itself say whether the key is good.
            return
        self._bucket_ready = True

    def _info(self, operation: str, name: str) -> dict[str, Any]:
        key = _clean_key(name)
        with self._translate_errors(operation, key):
            return self._files().info(_quoted(key))

    # Errors

    @contextmanager
    def _translate_errors(self, operation: str, name: str | None = None) -> Iterator[None]:
        """Turn storage3 and httpx failures into domain errors."""
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            translated = self._translated(exc, operation, name)
            if translated is None:
                raise
            raise translated from exc

    def _translated(self, exc: Exception, operation: str, name: str | None) -> StorageError | None:
        # Imported here, not per request: _translate_errors wraps every chunk of a download.
        import httpx
        from storage3.exceptions import StorageApiError
        from storage3.utils import StorageException

        if isinstance(exc, StorageApiError):
            error_class = domain_error_class(exc)
            if error_class is StorageBucketMissingError:
                self._bucket_ready = False  # deleted behind our back: create it on the next write
            return error_class(details=self._details(operation, name, **api_error_fields(exc)))
        if isinstance(exc, httpx.TransportError):
            # Refused, reset, timed out, or the server hung up mid-request.
            return StorageUnavailableError(details=self._details(operation, name, reason=describe(exc)))
        if isinstance(exc, (httpx.HTTPError, StorageException, ValueError, KeyError, TypeError)):
            # An answer we cannot read (not JSON, missing fields): still the storage's fault.
            return StorageError(details=self._details(operation, name, reason=describe(exc)))
        return None

    def _details(self, operation: str, name: str | None, **fields: Any) -> dict[str, Any]:
        details = {"operation": operation, "bucket": self.bucket, **({"name": name} if name else {}), **fields}
        # Nothing the server or the network says may carry the key into a log or a response.
        return {k: self._redact(v) for k, v in details.items()}

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str) and self.key:
            return value.replace(self.key, "***")
        return value


class _ResponseStream(io.RawIOBase):
    """A raw, read-only file over a streamed httpx response."""

    def __init__(self, response: httpx.Response, storage: SupabaseStorage, name: str):
        self._response = response
        self._storage = storage
        self._name = name
        self._chunks = response.iter_bytes(CHUNK_SIZE)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._pending:
            with self._storage._translate_errors("open", self._name):
                self._pending = memoryview(next(self._chunks, b""))
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        if not self.closed:
            self._response.close()  # releases the connection, even mid-body
        super().close()


class _UploadSource(io.RawIOBase):
    """A raw, read-only view of any file object, for storage3's upload type check."""

    def __init__(self, source: Any):
        self._source = source
        self._pending = b""
        # Text sources (a ContentFile of str) are encoded as they go; their
        # length in bytes is unknown up front, so they are sent chunked.
        self._text = isinstance(source.read(0), str)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        seekable = getattr(self._source, "seekable", None)
        return not self._text and callable(seekable) and seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self.seekable():
            raise io.UnsupportedOperation("seek")
        self._pending = b""
        return self._source.seek(offset, whence)

    def tell(self) -> int:
        if not self.seekable():
            raise io.UnsupportedOperation("tell")
        return self._source.tell()

    def readinto(self, buffer) -> int:
        if not self._pending:
            data = self._source.read(len(buffer))
            if not data:
                return 0
            self._pending = data.encode() if isinstance(data, str) else bytes(data)
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        # The caller owns the source file; only this view closes.
        super().close()


def _upload_source(content: Any) -> Any:
    """What to hand storage3's upload(): a path or a real binary reader, never bytes."""
    temporary_file_path = getattr(content, "temporary_file_path", None)
    if callable(temporary_file_path):
        return Path(temporary_file_path())
    inner = content
    while isinstance(inner, File):
        inner = inner.file
    # storage3 treats anything else as a path to open, so wrap other file
    # objects (NamedTemporaryFile, BytesIO, ContentFile) in a BufferedReader.
    if isinstance(inner, (io.BufferedReader, io.FileIO)):
        return inner
    return io.BufferedReader(_UploadSource(inner), buffer_size=CHUNK_SIZE)


def _modified_of(info: dict[str, Any]) -> datetime | None:
    """An object info's `last_modified` (its row's updated_at), aware; None when it has none."""
    try:
        modified = datetime.fromisoformat(str(info.get("last_modified")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return modified if modified.tzinfo else modified.replace(tzinfo=timezone.utc)


def _clean_key(name: str) -> str:
    key = str(name).replace("\\", "/").lstrip("/")
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") for part in parts):
        raise SuspiciousFileOperation(f"Invalid object name: {name!r}")
    return key


def _quoted(key: str) -> str:
    # storage3 unquotes the path before encoding it, so quote first to keep a
    # literal "%" in a name.
    return urllib.parse.quote(key, safe="/")


def _content_type(key: str) -> str:
    if key.endswith(".gz"):
        return "application/gzip"
    if key.endswith(".json"):
        return "application/json"
    return "application/octet-stream"
