"""gunicorn's configuration, the one place for it: Render's start command and `make demo` use it
(gunicorn also reads ./gunicorn.conf.py by itself when started from the repository's root).

The worker (core.gunicorn_worker, its docstring has the map) is gthread whose event loop reads
each request whole, headers and body, before a thread sees it. Idle connections and half-sent
headers or bodies, however many, then hold no thread and are closed at their deadline, so they
cannot freeze /api/health/ (issue 18: two of them froze the two sync workers).

Why these numbers:
- threads: a thread is held only while an answer is computed or streamed. Long ones are
  downloads (a backup streams for as long as the client reads) and API calls that wait up to
  JOB_WAIT_SECONDS (20 s) for a job; eight per worker leave room beside them. Each busy thread
  may hold one PostgreSQL connection: workers × threads stays far below the server's limit.
- timeout: for gthread it is only the main loop's heartbeat (the loop keeps beating while
  threads serve), so it never cuts a long download or upload, unlike the sync workers' 600 s,
  which was also how long a stuck sync worker lived. 30 s replaces a hung worker quickly.
- keepalive: an idle kept-alive connection holds no thread, only a socket and a slot among
  worker_connections; 5 s keeps connections from the proxy reusable between requests.
- request_timeout and min_rate: a request has 10 s from its first byte, plus one second per
  500 bytes of body (Apache mod_reqtimeout's defaults): a 500 MB restore upload passes at any
  speed above 0.5 kB/s; a client that trickles less is cut.
- max_body_bytes: larger bodies are not buffered (the restore view refuses them by their
  Content-Length, RESTORE_MAX_UPLOAD_BYTES); buffering up to it costs a temporary file as big
  as the upload, besides the one Django makes.
Each can be changed by an environment variable (GUNICORN_<NAME>), e.g. for a test.
"""
import os

from core.gunicorn_worker import RequestBufferingWorker


def _env(name: str, default: float) -> float:
    return float(os.environ.get(f"GUNICORN_{name}", default))


bind = [f"0.0.0.0:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", 2))
threads = int(_env("THREADS", 8))
timeout = int(_env("TIMEOUT", 30))
keepalive = int(_env("KEEPALIVE", 5))


class BufferingThreadWorker(RequestBufferingWorker):
    request_timeout = _env("REQUEST_TIMEOUT", 10)
    min_rate = _env("MIN_RATE", 500)
    # RESTORE_MAX_UPLOAD_BYTES's default (500 MB) and a multipart form's overhead
    max_body_bytes = int(_env("MAX_BODY_BYTES", int(os.environ.get("RESTORE_MAX_UPLOAD_BYTES", 500 * 1024 * 1024)) + 1024 * 1024))


worker_class = BufferingThreadWorker
