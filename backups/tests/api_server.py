"""The API served over real HTTP from the test's own process (a thread), on a free local port.

The server runs this process's settings (a test's `settings` changes included) against the
committed test database: for tests marked `committed` only.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.core.wsgi import get_wsgi_application
from django.db import connections


class QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serving(server) -> Iterator[str]:
    """Serve on a thread while the block runs; the server's base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def api_server() -> WSGIServer:
    application = get_wsgi_application()

    def app(environ, start_response):
        try:
            return application(environ, start_response)
        finally:
            connections.close_all()  # this thread's connections, before the test database goes away

    return make_server("127.0.0.1", 0, app, handler_class=QuietWSGIHandler)
