"""Statements on a thread of their own while the restore reads the file on."""
from __future__ import annotations

import concurrent.futures
import logging
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from django.db import connection


logger = logging.getLogger(__name__)

# A COPY batch ends at this many rows or this many characters of JSON, whichever comes first.

SWITCH_INTERVAL = 0.00005


class Background:
    """Statements run on a thread of their own while the restore reads on: each batch's COPY,
    and a loaded table's indexes. psycopg2 lets the GIL go while the server works, so the
    file is parsed on one core while PostgreSQL loads on the other.

    One statement at a time on the connection: the thread runs them in order, and the
    restore's own statements (execute, _copy, the progress callback) first wait for them
    all (wait). The thread uses the psycopg2 connection directly, with savepoints of its
    own: Django's connection and savepoints belong to the thread that opened them.
    """

    def __init__(self, raw):
        self.raw = raw
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-load")
        self._futures: list[Future] = []
        # The thread takes the GIL back after each wait on the server; by default the parsing
        # thread lets it go only every 5 ms, which would stall the load on every batch.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL))

    def submit(self, function: Callable, *args) -> Future:
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
        sys.setswitchinterval(self._switch_interval)


def execute_raw(raw, sql: str) -> None:
    with raw.cursor() as cursor:
        cursor.execute(sql)
