"""Real receivers for the alerts' tests: an SMTP server (aiosmtpd) and an HTTP server that
records every request (the webhook and the heartbeat), both on 127.0.0.1, in this process."""
from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpServer:
    """An SMTP server that keeps each message it accepts, parsed."""

    def __init__(self) -> None:
        self.messages: list = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append({"to": list(envelope.rcpt_tos), "subject": message["subject"],
                              "body": message.get_body(("plain",)).get_content()})
        return "250 OK"

    def start(self) -> "SmtpServer":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class HttpReceiver:
    """An HTTP server that records (method, path, JSON body) and answers `status` (200 unless changed)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append({"method": self.command, "path": self.path,
                                          "json": json.loads(body) if body else None})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _record

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "HttpReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self) -> list[dict]:
        return [request for request in self.requests if request["method"] == "POST"]

    def paths(self) -> list[str]:
        return [request["path"] for request in self.requests if request["method"] == "GET"]
