"""gunicorn's threaded worker, reading each request whole before a thread sees it (gunicorn.conf.py uses it).

Stock gthread (gunicorn 23) hands a connection to a thread as soon as one byte arrives, and the
thread then blocks in recv() with no timeout until the client has sent the request line, the
headers and, as the app reads it, the body. A client that sends part of a request and waits
holds a thread for as long as it likes: workers × threads of them freeze the service,
/api/health/ included. A connection that sends nothing is never closed, and worker_connections
of those stop a worker from accepting at all.

Here the worker's event loop (its main thread, non-blocking sockets) does the reading:
1. Accepted, a connection waits in the selector; a kept-alive one waits `keepalive` seconds for
   its next request. No thread is involved.
2. Whatever arrives is appended to the request's bytes: in memory up to `memory_bytes`, beyond
   that (an upload) in an anonymous temporary file in BACKUP_TEMP_DIR, which vanishes with the
   worker however it dies.
3. When the head (request line and headers) and the whole body its Content-Length announces are
   there, the request goes to a thread, which parses it from those bytes and never waits for
   the client. A client that asked `Expect: 100-continue` gets its 100 from the loop.
4. A request must arrive within `request_timeout` seconds of its first byte (of the accept, for
   a new connection), plus one second per `min_rate` bytes of body received (Apache
   mod_reqtimeout's rule): a large upload at any usable speed goes through whatever its size,
   a trickle does not. Past that deadline the loop closes the connection.
5. A request it cannot buffer goes to a thread at once and its connection closes after the
   answer: a chunked body (Django reads no body without Content-Length), a body over
   `max_body_bytes` (the restore view refuses it by its Content-Length without reading it), a
   head over `memory_bytes` (gunicorn answers 400 past its own limits), a malformed length. The
   thread's reads of what is missing keep the deadline of 4.
Answers are written by the threads as in stock gthread: a long download holds its thread while
it streams, which is why each worker has several.

Not handled: TLS in gunicorn (Render's proxy terminates it), and pipelined requests (a client
that sends its next request before the answer gets the first answered and the connection
closed; neither browsers nor proxies pipeline).
"""
from __future__ import annotations

import errno
import selectors
import socket
import time
from functools import partial

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
RECV_BYTES = 64 * 1024
HEAD_END = b"\r\n\r\n"


class ReceivedRequest:
    """One request's bytes as they arrive, what its head says of its body, and its deadline."""

    def __init__(self, worker: RequestBufferingWorker, started: float):
        self.worker = worker
        self.started = started
        self.memory = bytearray()
        self.file = None
        self.size = 0
        self.read_at = 0
        self.head_size: int | None = None
        self.total: int | None = None  # head and body, once the head says how long the body is
        self.buffered = True  # False: handed to a thread before all of it arrived
        self.expect_continue = False
        self.continued = False
        self.pipelined = False
        self.body_received = 0

    @property
    def deadline(self) -> float:
        worker = self.worker
        return self.started + worker.request_timeout + self.body_received / worker.min_rate

    @property
    def complete(self) -> bool:
        return self.total is not None and self.size >= self.total

    def feed(self, data: bytes) -> None:
        """Take bytes from the socket; bytes past this request's end (a pipelined request) are dropped."""
        if self.total is not None and self.size + len(data) > self.total:
            data, self.pipelined = data[: self.total - self.size], True
        searched_from = max(0, self.size - len(HEAD_END) + 1)
        self._append(data)
        if self.head_size is None:
            end = self.memory.find(HEAD_END, searched_from)
            if end >= 0:
                self.head_size = end + len(HEAD_END)
                self._read_framing(bytes(self.memory[:end]))
                if self.total is not None and self.size > self.total:
                    del self.memory[self.total:]
                    self.size, self.pipelined = self.total, True
            elif self.size > self.worker.memory_bytes:
                self.buffered = False
        if self.head_size is not None:
            self.body_received = self.size - self.head_size

    def _append(self, data: bytes) -> None:
        if self.file is None and self.head_size is not None and len(self.memory) + len(data) > self.worker.memory_bytes:
            from core.files import temporary_file  # Django's settings are loaded in the worker by now

            self.file = temporary_file()
            self.file.write(self.memory)
            self.memory = bytearray()
        if self.file is not None:
            self.file.seek(0, 2)
            self.file.write(data)
        else:
            self.memory += data
        self.size += len(data)

    def _read_framing(self, head: bytes) -> None:
        length, valid = None, True
        for line in head.split(b"\r\n")[1:]:
            name, _sep, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                valid = valid and value.isdigit() and (length is None or int(value) == length)
                length = int(value) if value.isdigit() else length
            elif name == b"transfer-encoding":
                valid = False  # chunked: the app never reads it; gunicorn refuses anything else
            elif name == b"expect" and value == b"100-continue":
                self.expect_continue = True
        if not valid or (length or 0) > self.worker.max_body_bytes:
            self.buffered = False
            return
        self.total = self.head_size + (length or 0)

    def read(self, size: int) -> bytes:
        """The next bytes received and not yet read, up to `size`; b"" when there are none."""
        if self.file is not None:
            self.file.seek(self.read_at)
            data = self.file.read(min(size, self.size - self.read_at))
        else:
            data = bytes(self.memory[self.read_at:self.read_at + size])
        self.read_at += len(data)
        return data

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.memory = bytearray()


class RequestSource:
    """What gunicorn's parser reads from: the request's received bytes, then (for one handed over
    before all of it arrived) the socket, waiting no longer than the request's deadline."""

    def __init__(self, request: ReceivedRequest, sock: socket.socket):
        self.request = request
        self.sock = sock

    def recv(self, size: int) -> bytes:
        data = self.request.read(size)
        if data or self.request.buffered:
            return data
        remaining = self.request.deadline - time.monotonic()
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError("the client did not send its request in time")
        data = self.sock.recv(size)
        self.request.body_received += len(data)
        return data


class RequestBufferingWorker(ThreadWorker):
    """gthread whose threads only ever see requests that have fully arrived (see the module's map)."""

    request_timeout = 10.0
    min_rate = 500.0
    memory_bytes = 32 * 1024
    max_body_bytes = 600 * 1024 * 1024

    @classmethod
    def check_config(cls, cfg, log):
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise RuntimeError("RequestBufferingWorker no atiende TLS: termínelo en el proxy.")

    # 1. a new connection waits in the selector, with the deadline of its first request
    def accept(self, server, listener):
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = TConn(self.cfg, sock, client, server)
        conn.request = ReceivedRequest(self, time.monotonic())
        self.nr_conns += 1
        self._wait(conn)

    def _wait(self, conn) -> None:
        with self._lock:
            self._keep.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))

    @staticmethod
    def _deadline(conn) -> float:
        return conn.request.deadline if conn.request is not None else conn.idle_until

    # 2.–3. read what arrived; hand the request to a thread once it is all here
    def on_client_socket_readable(self, conn, client):
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        if conn.request is None:  # the first byte of a kept-alive connection's next request
            conn.request = ReceivedRequest(self, time.monotonic())
        request = conn.request
        request.feed(data)
        if request.expect_continue and not request.continued and request.buffered and not request.complete:
            request.continued = True
            try:
                conn.sock.send(CONTINUE)
            except OSError:
                pass  # the client sends its body after its own wait anyway
        if request.complete or not request.buffered:
            with self._lock:
                self.poller.unregister(conn.sock)
                self._keep.remove(conn)
            self.enqueue_req(conn)

    def enqueue_req(self, conn):
        conn.initialized = True
        conn.sock.setblocking(True)
        conn.parser = http.RequestParser(self.cfg, RequestSource(conn.request, conn.sock), conn.client)
        fs = self.tpool.submit(self.handle, conn)
        self._wrap_future(fs, conn)

    def handle_request(self, req, conn):
        request = conn.request
        if request.continued:
            # The loop already answered 100 Continue; gunicorn would send a second one.
            req.headers = [(name, value) for name, value in req.headers if name != "EXPECT"]
        if not request.buffered or request.pipelined:
            req.force_close()  # what follows on this connection was not read as a request
        return super().handle_request(req, conn)

    def finish_request(self, fs):
        conn = fs.conn
        if conn.request is not None:
            conn.request.close()
            conn.request = None
        conn.parser = None
        try:
            keepalive = not fs.cancelled() and fs.result()[0]
        except Exception:  # noqa: BLE001 - as stock gthread: any failure closes the connection
            keepalive = False
        if keepalive and self.alive:
            conn.sock.setblocking(False)
            conn.idle_until = time.monotonic() + self.cfg.keepalive
            self._wait(conn)
        else:
            self.nr_conns -= 1
            conn.close()

    # 4. past its deadline, a waiting connection is closed
    def murder_keepalived(self):
        now = time.monotonic()
        with self._lock:
            expired = [conn for conn in self._keep if self._deadline(conn) <= now]
            for conn in expired:
                self._keep.remove(conn)
                self._unregister(conn)
        for conn in expired:
            self._close(conn)

    def _drop(self, conn) -> None:
        with self._lock:
            self._keep.remove(conn)
            self._unregister(conn)
        self._close(conn)

    def _unregister(self, conn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass  # already gone

    def _close(self, conn) -> None:
        if conn.request is not None:
            conn.request.close()
        self.nr_conns -= 1
        conn.close()
