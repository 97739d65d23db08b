"""A small Supabase Storage server for tests, speaking the REST API storage3 uses.

It keeps objects on disk, reads request bodies and writes downloads in chunks
(and records them, so tests can tell streaming from buffering), and answers as
the real server does: errors with HTTP 400 and the real status in the body
(``{"statusCode": "404", "error": "not_found", "message": "Object not found"}``).
In front of it sits a stand-in for Supabase's API gateway, which rejects a wrong
``apikey`` with a plain HTTP 401. Knobs let a test make it reject large objects,
hang up mid-upload, after storing or mid-download, be down altogether, have a name taken by
another client just before an upload, or leave fields out of an object's info.
"""
from __future__ import annotations

import socket
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from backups.tests.supabase_handler import _Handler, _Server
from backups.tests.supabase_objects import DEFAULT_KEY, DownloadRecord, StoredObject, UploadRecord

class FakeSupabaseStorage:
    """The server's state and knobs; ``url`` and ``key`` are what a client is configured with."""

    def __init__(self, directory: Path, *, key: str = DEFAULT_KEY, max_object_size: int = 50 * 1024 * 1024):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.max_object_size = max_object_size
        self.gateway = True  # False: the storage server alone, as when self-hosted without a key check
        self.fail_upload_after: int | None = None  # hang up once this many body bytes arrived
        self.fail_download_after: int | None = None  # hang up once this many object bytes were sent
        # An object whose name ends so is stored, then the connection drops before the answer
        # (a proxy timing out): the client sees a failure, the object is there all the same.
        self.hang_up_after_storing: str | None = None
        # Another client stores these (bucket, name) objects just as an upload to that name arrives:
        # a user taking a name the client found free a moment before.
        self.taken_before_upload: dict[tuple[str, str], bytes] = {}
        self.info_omits: set[str] = set()  # fields an object's info leaves out, as an older server's does
        self.buckets: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.uploads: list[UploadRecord] = []
        self.downloads: list[DownloadRecord] = []
        self.signed_urls: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self._tokens: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeSupabaseStorage:
        # A short poll keeps stop() quick: shutdown() waits for the loop to notice.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering; the port is closed afterwards (connections are refused)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread = None
        self._httpd.server_close()

    # Direct access for tests

    def create_bucket(self, name: str, *, public: bool = False) -> None:
        now = datetime.now(timezone.utc).isoformat()
        self.buckets[name] = {
            "id": name,
            "name": name,
            "owner": "",
            "public": public,
            "created_at": now,
            "updated_at": now,
            "file_size_limit": None,
            "allowed_mime_types": None,
        }

    def put(self, bucket: str, name: str, data: bytes, content_type: str = "application/gzip") -> None:
        if bucket not in self.buckets:
            self.create_bucket(bucket)
        path = self.directory / f"object-{uuid.uuid4().hex}"
        path.write_bytes(data)
        self.objects[(bucket, name)] = StoredObject(path, len(data), content_type)

    def read(self, bucket: str, name: str) -> bytes:
        return self.objects[(bucket, name)].read()

    def has(self, bucket: str, name: str) -> bool:
        return (bucket, name) in self.objects


def closed_port_url() -> str:
    """The URL of a local port nothing listens on: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
