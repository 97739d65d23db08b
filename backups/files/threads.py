"""The worker threads of a file phase (a backup's, backups.files.store; a restore's, backups.files.restore).

The calling thread keeps the database session and hands each file's storage work
(stat, read, hash, upload or download, write) to BACKUP_FILE_WORKERS threads:
hashing and file or socket I/O release the GIL, so the files overlap. Results come
back in the order the work was started, so the calling thread records them in the
order it listed them. At most 2 × workers pieces of work per queue are started ahead
of the oldest one not yet taken back, so memory stays flat whatever the number of
files (each holds at most one bounded spool).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from django.conf import settings

T = TypeVar("T")


class FileThreads:
    """A file phase's worker threads; leaving the `with` block (an error included) waits for every one of them."""

    def __init__(self, name: str, workers: int | None = None):
        workers = max(1, settings.BACKUP_FILE_WORKERS if workers is None else workers)
        self.window = 2 * workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def __enter__(self) -> FileThreads:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Nothing more starts (work not begun is cancelled), and the work running ends before this returns:
        no thread outlives the phase, nor writes after its caller has given up."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def in_order(threads: FileThreads, work: Callable[..., T], items: Iterable[tuple]) -> Iterator[T]:
    """work(*item) for each item on the threads, the results yielded in the items' order,
    never more than the window ahead of the one taken back last."""
    running: InOrder[T] = InOrder(threads)
    for item in items:
        running.start(work, *item)
        if running.full():
            yield running.take()
    while running:
        yield running.take()


class InOrder(Generic[T]):
    """Work started on FileThreads, its results taken back in the order it was started."""

    def __init__(self, threads: FileThreads):
        self.threads = threads
        self.futures: deque[Future[T]] = deque()

    def __len__(self) -> int:
        return len(self.futures)

    def start(self, work: Callable[..., T], *args: Any) -> None:
        self.futures.append(self.threads.pool.submit(work, *args))

    def full(self) -> bool:
        """More in flight than the window: the caller takes results back before starting more."""
        return len(self.futures) > self.threads.window

    def take(self) -> T:
        """The oldest result, once it is there; any error raised at once, even a later piece's,
        so that the caller stops starting work as soon as one piece has failed."""
        self._raise_failed()
        return self.futures.popleft().result()

    def take_done(self) -> list[T]:
        """The oldest result (waiting for it) and every one after it that is already there."""
        taken = [self.take()]
        while self.futures and self.futures[0].done():
            taken.append(self.take())
        return taken

    def finished(self) -> Iterator[T]:
        """After shutdown: the results never taken back, for the caller to release what they hold."""
        for future in self.futures:
            if not future.cancelled() and future.exception() is None:
                yield future.result()

    def _raise_failed(self) -> None:
        for future in self.futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()
