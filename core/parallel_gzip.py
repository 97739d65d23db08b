"""gzip on several cores, written as ONE standard gzip member, the way pigz does by default.

Why one member, not a member per block: a file of several members is valid gzip for gunzip
and Python's gzip, but the product serves the stored bytes as they are with
`Content-Encoding: gzip` (backups.views, DownloadForm.ENCODED), and HTTP decoders stop after
the first member: Chromium (GzipSourceStream) and httpx drop the rest without an error, curl
keeps the first member and exits 23. A browser's download would be a truncated SQL file that
looks whole (backups/tests/test_parallel_dump.py shows all three).

1. The input is cut into blocks of BLOCK_SIZE bytes. Each block is compressed on a worker
   thread as raw deflate (zlib releases the GIL while it deflates, so the threads really run
   side by side), primed with the last 32 KiB of the block before it (a zlib dictionary: the
   ratio stays gzip's) and ended with Z_SYNC_FLUSH, which leaves it on a byte boundary with
   no final bit set; the last block ends with Z_FINISH. The pieces, concatenated in order,
   are one deflate stream.
2. The writer emits the 10-byte gzip header (mtime 0, so the same input gives the same
   bytes), the pieces in input order, then the CRC32 and the length of the whole input. Each
   worker takes its block's CRC32 too; the writer joins them with crc32_combine (3 µs a
   block), which keeps even that pass (13 ms for 70 MB) off the thread that feeds us.
3. At most max_in_flight blocks wait or compress at once: when that many are out, write()
   waits for the oldest and writes it. Memory stays bounded whatever the input's size.
   Blocks are views of the caller's bytes, not copies (a mutable buffer is copied first).
4. Everything the destination sees is written from the caller's thread (so a destination
   may update the database, whose connections are per thread); an error there or in a
   worker stops the pool, waits for the blocks being compressed, and is raised.
The bytes depend on the input, the level and BLOCK_SIZE, not on the number of workers:
workers=1 compresses the same blocks in the caller's thread, without a pool.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

# pigz's default is 128 KiB. 256 KiB: the same CPU and ratio as one zlib stream (within 1% and 0.02%
# on a clinic's dump), and half the memory of 1 MiB blocks, whose buffers the threads' malloc arenas keep.
BLOCK_SIZE = 256 * 1024
WINDOW = 32 * 1024  # deflate's window: what a block may refer back to
DEFAULT_LEVEL = 6
# The thread feeding a dump passes about 230 MB/s of SQL (COPY, two sha256, row counts: 0.3 s of CPU for the
# million-row clinic's 70 MB), what some 7 threads deflate at level 6 (35 MB/s each): more would wait.
MAX_DEFAULT_WORKERS = 8
# gzip magic, deflate, no flags, mtime 0, no extra flags, OS unknown (255) as gzip -n writes it.
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
THREAD_NAME_PREFIX = "gzip-block"


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


def compress_workers() -> int:
    """BACKUP_COMPRESS_WORKERS, or with 0 (the default) one per CPU this process may run on."""
    from django.conf import settings

    configured = int(getattr(settings, "BACKUP_COMPRESS_WORKERS", 0) or 0)
    if configured > 0:
        return configured
    try:
        usable = len(os.sched_getaffinity(0))  # a container's or taskset's CPUs, not the host's
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return max(1, min(usable, MAX_DEFAULT_WORKERS))


# -- CRC32 of a concatenation from the parts' CRCs (zlib's crc32_combine, which Python's zlib lacks)

_POLY = 0xEDB88320  # CRC-32, reflected


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial, both reflected (zlib's crc32.c)."""
    m, product = 1 << 31, 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table, power = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(power)
        power = _multmodp(power, power)
    return table


_X2N = _x2n_table()


def crc32_shift(length: int) -> int:
    """The operator that moves a CRC past length more bytes: x^(8 * length) modulo the polynomial."""
    power, k, n = 1 << 31, 3, length
    while n:
        if n & 1:
            power = _multmodp(_X2N[k & 31], power)
        n >>= 1
        k += 1
    return power


def crc32_combine(crc1: int, crc2: int, length2: int, shift: int | None = None) -> int:
    """zlib.crc32(a + b) from zlib.crc32(a), zlib.crc32(b) and len(b) (shift: crc32_shift(len(b)))."""
    return _multmodp(crc32_shift(length2) if shift is None else shift, crc1) ^ crc2


def _deflate_block(block, dictionary, level: int, last: bool) -> tuple[tuple[bytes, bytes], int]:
    """A block as raw deflate that continues the stream before it (step 1), and its CRC32."""
    if dictionary:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, zlib.DEF_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, dictionary)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return (compressor.compress(block), compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)), zlib.crc32(block)


class ParallelGzipWriter:
    """A file-like write()/close() that gzips into destination on `workers` threads (see the map)."""

    def __init__(self, destination: Writable, *, workers: int | None = None, level: int = DEFAULT_LEVEL,
                 block_size: int = BLOCK_SIZE, max_in_flight: int | None = None):
        self.destination = destination
        self.workers = compress_workers() if workers is None else max(1, workers)
        self.level, self.block_size = level, block_size
        # Two blocks a worker: one compressing, one queued for it while the oldest is written.
        self.max_in_flight = max_in_flight or 2 * self.workers
        self._pool = ThreadPoolExecutor(self.workers, THREAD_NAME_PREFIX) if self.workers > 1 else None
        self._in_flight: deque[tuple[Future, int]] = deque()
        self._pending = bytearray()
        self._dictionary = b""
        self._crc, self._size = 0, 0
        self._block_shift = crc32_shift(block_size)
        self._header_written = self._closed = self._aborted = False

    def __enter__(self) -> "ParallelGzipWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, data) -> int:
        if self._closed:
            raise ValueError("write to a closed ParallelGzipWriter")
        try:
            # Blocks are cut from an immutable input without a copy (views the workers read);
            # only what falls between two writes is gathered in _pending.
            view = memoryview(data if isinstance(data, bytes) else bytes(data))
            position = 0
            if self._pending:
                position = min(len(view), self.block_size - len(self._pending))
                self._pending += view[:position]
                if len(self._pending) == self.block_size:
                    block, self._pending = bytes(self._pending), bytearray()
                    self._submit(block, last=False)
            while len(view) - position >= self.block_size:
                self._submit(view[position:position + self.block_size], last=False)
                position += self.block_size
            self._pending += view[position:]
        except BaseException:
            self.abort()
            raise
        return len(data)

    def close(self) -> None:
        """Compress what is left, write the trailer, stop the threads."""
        if self._aborted:
            raise ValueError("close of an aborted ParallelGzipWriter: what it wrote is not a whole gzip file")
        if self._closed:
            return
        try:
            self._submit(bytes(self._pending), last=True)
            self._pending = bytearray()
            while self._in_flight:
                self._write_oldest()
            self._write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        except BaseException:
            self.abort()
            raise
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Give up: drop the blocks not started, wait for those compressing; nothing more is written."""
        self._aborted = self._aborted or not self._closed
        self._closed = True
        self._in_flight.clear()
        self._pending = bytearray()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, block: bytes, *, last: bool) -> None:
        dictionary, self._dictionary = self._dictionary, block[-WINDOW:] if not last else b""
        if self._pool is None:
            self._write_piece(*_deflate_block(block, dictionary, self.level, last), len(block))
            return
        if len(self._in_flight) >= self.max_in_flight:
            self._write_oldest()
        self._in_flight.append((self._pool.submit(_deflate_block, block, dictionary, self.level, last), len(block)))

    def _write_oldest(self) -> None:
        future, length = self._in_flight.popleft()
        self._write_piece(*future.result(), length)  # a worker's exception is raised here

    def _write_piece(self, pieces: tuple[bytes, bytes], crc: int, length: int) -> None:
        self._crc = crc32_combine(self._crc, crc, length, self._block_shift if length == self.block_size else None)
        self._size += length
        for piece in pieces:
            if piece:
                self._write(piece)

    def _write(self, data: bytes) -> None:
        if not self._header_written:
            self._header_written = True
            self.destination.write(HEADER)
        self.destination.write(data)
