"""The HTTP side of the test Supabase Storage server (see supabase_server.py): routes, gateway, errors."""
from __future__ import annotations

import json
import secrets
import socket
import sys
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backups.tests.supabase_objects import CHUNK_SIZE, PREFIX, DownloadRecord, StoredObject, UploadRecord, _HangUp

if TYPE_CHECKING:
    from backups.tests.supabase_server import FakeSupabaseStorage


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Clients keep connections alive; do not wait for their threads on close.
    block_on_close = False
    fake: FakeSupabaseStorage

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away first, as a cancelled download does
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle and
        # delayed ACKs add 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet test output

    @property
    def fake(self) -> FakeSupabaseStorage:
        return self.server.fake

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # Routing

    def _dispatch(self, method: str) -> None:
        self._body_consumed = False  # one handler serves every request of a kept-alive connection
        split = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(split.query)
        with self.fake._lock:
            self.fake.requests.append((method, split.path))
        if not split.path.startswith(PREFIX):
            return self._route_not_found(method, split.path)
        parts = [urllib.parse.unquote(p) for p in split.path[len(PREFIX):].split("/")]
        try:
            if parts[:2] == ["object", "sign"] and method == "GET" and len(parts) >= 4:
                # Signed downloads need no key: the token is the credential.
                return self._signed_download(parts[2], "/".join(parts[3:]), query.get("token", [""])[0])
            if not self._gateway_allows():
                return None
            if parts[0] == "bucket" and method == "GET" and len(parts) == 2:
                return self._get_bucket(parts[1])
            if parts == ["bucket"] and method == "POST":
                return self._create_bucket()
            if parts[:2] == ["object", "sign"] and method == "POST" and len(parts) >= 4:
                return self._sign(parts[2], "/".join(parts[3:]))
            if parts[:2] == ["object", "info"] and method == "GET" and len(parts) >= 4:
                return self._info(parts[2], "/".join(parts[3:]))
            if parts[:2] == ["object", "list"] and method == "POST" and len(parts) == 3:
                return self._list(parts[2])
            if parts[0] == "object" and method in ("POST", "PUT") and len(parts) >= 3:
                return self._upload(method, parts[1], "/".join(parts[2:]))
            if parts[0] == "object" and method == "DELETE" and len(parts) == 2:
                return self._delete(parts[1])
            return self._route_not_found(method, split.path)
        except _HangUp:
            self._hang_up()

    def _route_not_found(self, method: str, path: str) -> None:
        self._drain()
        # Fastify's own 404, the one answer that carries its real HTTP status.
        self._json(404, {"message": f"Route {method}:{path} not found", "error": "Not Found", "statusCode": 404})

    # Authentication

    def _gateway_allows(self) -> bool:
        if self.fake.gateway and self.headers.get("apikey") != self.fake.key:
            self._drain()
            # The API gateway's answer: a real 401 and no statusCode in the body.
            self._json(401, {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."})
            return False
        return True

    def _authenticated(self) -> bool:
        authorization = self.headers.get("Authorization", "")
        return authorization.removeprefix("Bearer ").strip() == self.fake.key

    def _require_auth(self) -> bool:
        if self._authenticated():
            return True
        self._drain()
        self._error("403", "Unauthorized", "invalid signature")
        return False

    # Buckets

    def _get_bucket(self, bucket: str) -> None:
        self._drain()
        if not self._require_auth():
            return
        if bucket not in self.fake.buckets:
            return self._bucket_not_found()
        self._json(200, self.fake.buckets[bucket])

    def _create_bucket(self) -> None:
        body = self._json_body()
        if not self._require_auth():
            return
        bucket = body.get("id") or body.get("name")
        with self.fake._lock:
            if bucket in self.fake.buckets:
                return self._error("409", "Duplicate", "The resource already exists")
            self.fake.create_bucket(bucket, public=bool(body.get("public", False)))
        self._json(200, {"name": bucket})

    # Objects

    def _upload(self, method: str, bucket: str, name: str) -> None:
        content_length = self.headers.get("Content-Length")
        record = UploadRecord(
            name=name,
            content_length=int(content_length) if content_length is not None else None,
            chunked="chunked" in self.headers.get("Transfer-Encoding", "").lower(),
        )
        with self.fake._lock:
            self.fake.uploads.append(record)
        if not self._require_auth():
            return
        if bucket not in self.fake.buckets:
            self._drain()
            return self._bucket_not_found()
        spool = self.fake.directory / f"upload-{uuid.uuid4().hex}"
        try:
            too_large = self._receive(spool, record)
            data_path, content_type = (None, "") if too_large else self._extract_file_part(spool)
        finally:
            spool.unlink(missing_ok=True)
        if too_large or (data_path is not None and data_path.stat().st_size > self.fake.max_object_size):
            if data_path is not None:
                data_path.unlink()
            # The real server counts while it streams and answers once the body is in.
            return self._error("413", "Payload too large", "The object exceeded the maximum allowed size")
        if data_path is None:
            return self._error("400", "InvalidRequest", "No content provided")
        upsert = self.headers.get("x-upsert", "false").lower() == "true"
        if (bucket, name) in self.fake.taken_before_upload:
            self.fake.put(bucket, name, self.fake.taken_before_upload.pop((bucket, name)))
        with self.fake._lock:
            exists = (bucket, name) in self.fake.objects
            if method == "POST" and exists and not upsert:
                data_path.unlink()
                return self._error("409", "Duplicate", "The resource already exists")
            if method == "PUT" and not exists:
                data_path.unlink()
                return self._object_not_found()
            stored = StoredObject(data_path, data_path.stat().st_size, content_type)
            self.fake.objects[(bucket, name)] = stored
        if self.fake.hang_up_after_storing and name.endswith(self.fake.hang_up_after_storing):
            raise _HangUp
        self._json(200, {"Key": f"{bucket}/{name}", "Id": stored.id})

    def _receive(self, spool: Path, record: UploadRecord) -> bool:
        """Write the request body to ``spool`` as it arrives; True when over the size limit."""
        limit = self.fake.max_object_size + CHUNK_SIZE  # room for the multipart envelope
        too_large = False
        with spool.open("wb") as out:
            for chunk in self._body_chunks():
                record.body_reads += 1
                record.largest_read = max(record.largest_read, len(chunk))
                record.bytes_received += len(chunk)
                if self.fake.fail_upload_after is not None and record.bytes_received >= self.fake.fail_upload_after:
                    raise _HangUp
                if record.bytes_received > limit:
                    too_large = True  # keep draining, stop keeping
                if not too_large:
                    out.write(chunk)
        return too_large

    def _extract_file_part(self, spool: Path) -> tuple[Path | None, str]:
        """Copy the ``file`` field of a multipart body to its own file, in chunks."""
        content_type = self.headers.get("Content-Type", "")
        boundary = content_type.partition("boundary=")[2].strip('"').encode()
        total = spool.stat().st_size
        with spool.open("rb") as body:
            head = body.read(CHUNK_SIZE)
            field_at = head.find(b'name="file"')
            headers_end = head.find(b"\r\n\r\n", field_at)
            closing = b"\r\n--" + boundary + b"--\r\n"
            body.seek(total - len(closing))
            if not boundary or field_at < 0 or headers_end < 0 or body.read() != closing:
                return None, ""
            part_headers = head[field_at:headers_end].decode(errors="replace").split("\r\n")
            part_type = next(
                (h.split(":", 1)[1].strip() for h in part_headers if h.lower().startswith("content-type:")),
                "application/octet-stream",
            )
            start, end = headers_end + 4, total - len(closing)
            data_path = self.fake.directory / f"object-{uuid.uuid4().hex}"
            body.seek(start)
            with data_path.open("wb") as out:
                remaining = end - start
                while remaining:
                    chunk = body.read(min(CHUNK_SIZE, remaining))
                    out.write(chunk)
                    remaining -= len(chunk)
        return data_path, part_type

    def _info(self, bucket: str, name: str) -> None:
        self._drain()
        # This route lets an invalid key through as an anonymous caller, who
        # cannot see a private bucket: a bad key reads as "Bucket not found".
        bucket_row = self.fake.buckets.get(bucket)
        if bucket_row is None or (not self._authenticated() and not bucket_row["public"]):
            return self._bucket_not_found()
        stored = self.fake.objects.get((bucket, name))
        if stored is None:
            return self._object_not_found()
        info = {
            "id": stored.id,
            "name": name,
            "version": stored.id,
            "bucket_id": bucket,
            "size": stored.size,
            "content_type": stored.content_type,
            "cache_control": "max-age=3600",
            "etag": f'"{stored.id}"',
            "metadata": None,
            "last_modified": stored.created_at,
            "created_at": stored.created_at,
        }
        self._json(200, {field: value for field, value in info.items() if field not in self.fake.info_omits})

    def _delete(self, bucket: str) -> None:
        body = self._json_body()
        if not self._require_auth():
            return
        removed = []
        with self.fake._lock:
            for name in body.get("prefixes", []):
                stored = self.fake.objects.pop((bucket, name), None)
                if stored is not None:
                    stored.path.unlink(missing_ok=True)
                    removed.append({"name": name, "bucket_id": bucket, "id": stored.id})
        # Missing names are skipped, not errors: the answer lists what was removed.
        self._json(200, removed)

    def _list(self, bucket: str) -> None:
        """The names directly under a folder, as the real server lists them: objects with their row
        (an id, metadata), folders with none; sorted by name, a page at a time."""
        body = self._json_body()
        if not self._require_auth():
            return
        if bucket not in self.fake.buckets:
            return self._bucket_not_found()
        prefix = body.get("prefix", "").strip("/")
        prefix = f"{prefix}/" if prefix else ""
        entries: dict[str, dict[str, Any]] = {}
        with self.fake._lock:
            for (stored_bucket, name), stored in self.fake.objects.items():
                if stored_bucket != bucket or not name.startswith(prefix):
                    continue
                head, separator, _rest = name[len(prefix):].partition("/")
                if separator:
                    entries.setdefault(head, {"name": head, "id": None, "metadata": None})
                else:
                    entries[head] = {"name": head, "id": stored.id, "metadata": {"size": stored.size}}
        offset, limit = int(body.get("offset", 0)), int(body.get("limit", 100))
        self._json(200, [entries[name] for name in sorted(entries)][offset:offset + limit])

    # Signed URLs

    def _sign(self, bucket: str, name: str) -> None:
        body = self._json_body()
        if not self._require_auth():
            return
        if bucket not in self.fake.buckets:
            return self._bucket_not_found()
        if (bucket, name) not in self.fake.objects:
            return self._object_not_found()
        expires_in = int(body.get("expiresIn", 0))
        token = secrets.token_urlsafe(24)
        with self.fake._lock:
            self.fake._tokens[token] = (bucket, name, time.monotonic() + expires_in)
            self.fake.signed_urls.append({"bucket": bucket, "name": name, "expires_in": expires_in})
        path = urllib.parse.quote(f"{bucket}/{name}")
        self._json(200, {"signedURL": f"/object/sign/{path}?token={token}"})

    def _signed_download(self, bucket: str, name: str, token: str) -> None:
        self._drain()
        granted = self.fake._tokens.get(token)
        if granted is None or granted[:2] != (bucket, name):
            return self._error("400", "InvalidJWT", "invalid signature")
        if granted[2] < time.monotonic():
            return self._error("400", "InvalidJWT", "jwt expired")
        stored = self.fake.objects.get((bucket, name))
        if stored is None:
            return self._object_not_found()
        record = DownloadRecord(name=name, sent_credentials=bool(self.headers.get("Authorization") or self.headers.get("apikey")))
        with self.fake._lock:
            self.fake.downloads.append(record)
        self.send_response(200)
        self.send_header("Content-Type", stored.content_type)
        self.send_header("Content-Length", str(stored.size))
        self.end_headers()
        sent = 0
        with stored.path.open("rb") as data:
            while chunk := data.read(CHUNK_SIZE):
                if self.fake.fail_download_after is not None and sent + len(chunk) > self.fake.fail_download_after:
                    self.wfile.write(chunk[: self.fake.fail_download_after - sent])
                    raise _HangUp
                self.wfile.write(chunk)
                sent += len(chunk)
                record.writes += 1
                record.largest_write = max(record.largest_write, len(chunk))

    # Plumbing

    def _body_chunks(self):
        """The request body in pieces of at most CHUNK_SIZE, whether sized or chunked; read once."""
        if self._body_consumed:
            return
        self._body_consumed = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size:
                    piece = self.rfile.read(min(CHUNK_SIZE, size))
                    if not piece:
                        return
                    size -= len(piece)
                    yield piece
                self.rfile.readline()  # the CRLF after each chunk
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            piece = self.rfile.read(min(CHUNK_SIZE, remaining))
            if not piece:
                return
            remaining -= len(piece)
            yield piece

    def _drain(self) -> None:
        # Read what is left of the body, so that the kept-alive connection stays in step.
        for _ in self._body_chunks():
            pass

    def _json_body(self) -> dict[str, Any]:
        return json.loads(b"".join(self._body_chunks()) or b"{}")

    def _hang_up(self) -> None:
        # Drop the connection as a crashed server would: no answer, a closed socket.
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: str, error: str, message: str) -> None:
        # The real server's habit: HTTP 400 (500 stays 500), the real status in the body.
        self._json(500 if status == "500" else 400, {"statusCode": status, "error": error, "message": message})

    def _bucket_not_found(self) -> None:
        self._error("404", "Bucket not found", "Bucket not found")

    def _object_not_found(self) -> None:
        self._error("404", "not_found", "Object not found")
