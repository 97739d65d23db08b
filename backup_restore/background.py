"""Statements on a thread of their own while the restore reads the file on."""
from __future__ import annotations

import concurrent.futures
import logging
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from django.db import connection


logger = logging.getLogger(__name__)

# How soon the parsing thread lets the GIL go to the loading thread, back from the server: each
# wait stalls the server too. A COPY of a third of a million rows took 0.47 s alone, 2.1 s beside
# a busy thread at Python's default 5 ms, 0.72 s at 0.5 ms, 0.49 s at 20 µs.
SWITCH_INTERVAL = 0.00005

# The interval is the process's, and restores overlap in one process (a web worker's threads, a
# worker's pool): the first restore to load lowers it, the last to end puts back what was there
# before the first. Each restoring its own saved value left it at 50 µs once two had overlapped.
_switch_lock = threading.Lock()
_switch_users = 0
_switch_before = sys.getswitchinterval()


def _switch_interval_lowered() -> None:
    global _switch_users, _switch_before
    with _switch_lock:
        if _switch_users == 0:
            _switch_before = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_before, SWITCH_INTERVAL))
        _switch_users += 1


def _switch_interval_restored() -> None:
    global _switch_users
    with _switch_lock:
        _switch_users -= 1
        if _switch_users == 0:
            sys.setswitchinterval(_switch_before)


class Background:
    """Statements run on a thread of their own while the restore reads on: each batch's COPY,
    and a loaded table's end (loader.finish_load). psycopg2 lets the GIL go while the server
    works, so the file is parsed on one core while PostgreSQL loads on the other.

    One statement at a time on the connection: the thread runs them in order, and the
    restore's own statements (execute, _copy, the progress callback) first wait for them
    all (wait); result() waits for one and those before it. The thread uses the psycopg2 connection directly, with savepoints of its
    own: Django's connection and savepoints belong to the thread that opened them.
    """

    def __init__(self, raw):
        self.raw = raw
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-load")
        self._futures: list[Future] = []
        # The thread takes the GIL back after each wait on the server (SWITCH_INTERVAL).
        _switch_interval_lowered()
        self._closed = False

    def submit(self, function: Callable, *args) -> Future:
        # Those that ended well need no waiting for: a long restore sends thousands.
        self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]
        future = self._pool.submit(function, self.raw, *args)
        self._futures.append(future)
        return future

    def wait(self) -> None:
        """Once every statement sent ended; the first error raised, as Django raises it."""
        futures, self._futures = self._futures, []
        concurrent.futures.wait(futures)
        with connection.wrap_database_errors:
            for future in futures:
                future.result()

    def idle(self) -> bool:
        """Whether every statement sent has ended."""
        return all(future.done() for future in self._futures)

    def result(self, future: Future):
        """One statement's result, once it and those sent before it ended; its error raised as Django raises it."""
        concurrent.futures.wait([future])
        with connection.wrap_database_errors:
            return future.result()

    def close(self) -> None:
        concurrent.futures.wait(self._futures)  # whatever happened, nothing runs on the connection after this
        self._futures = []
        self._pool.shutdown(wait=True)
        if not self._closed:
            self._closed = True
            _switch_interval_restored()
