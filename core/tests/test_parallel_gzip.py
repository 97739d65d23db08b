"""core.parallel_gzip: one standard gzip member whatever the number of threads, bounded, and stopped on any error."""
from __future__ import annotations

import gzip
import hashlib
import io
import random
import subprocess
import threading
import zlib

import pytest

from backups.dump.pg_tools import GzipSqlSink
from core.parallel_gzip import BLOCK_SIZE, THREAD_NAME_PREFIX, ParallelGzipWriter, crc32_combine

pytestmark = pytest.mark.no_test_db
BLOCK = 64 * 1024  # small blocks: many of them in little data


def _random(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _sql_like(size: int, seed: int = 1) -> bytes:
    """COPY rows as pg_dump writes them: repetitive, with some randomness, as a clinic's dump."""
    rng = random.Random(seed)
    lines, total = [], 0
    while total < size:
        line = (f"{rng.randrange(10**6)}\t2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} 10:00:00+00\t"
                f"{rng.choice(['pendiente', 'confirmada', 'cancelada'])}\tControl {rng.getrandbits(64):x}\t\\N\n")
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def _compress(data: bytes, *, workers: int, block_size: int = BLOCK, piece: int = 10_000, level: int = 6) -> bytes:
    out = io.BytesIO()
    with ParallelGzipWriter(out, workers=workers, block_size=block_size, level=level) as writer:
        for start in range(0, len(data), piece):
            writer.write(data[start:start + piece])
    return out.getvalue()


def _one_member(compressed: bytes) -> bytes:
    """What a decoder that reads a single gzip member (as HTTP clients do) gets; it must be everything."""
    decoder = zlib.decompressobj(31)
    data = decoder.decompress(compressed)
    assert decoder.eof and decoder.unused_data == b""
    return data


def _our_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(THREAD_NAME_PREFIX)]


SIZES = [0, 1, 1000, BLOCK - 1, BLOCK, 3 * BLOCK, 3 * BLOCK + 17, 40 * BLOCK + 5]


@pytest.mark.parametrize("make", [_random, _sql_like])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_any_size_round_trips_as_one_gzip_member_through_python_and_gunzip(make, size, workers):
    data = make(size)
    compressed = _compress(data, workers=workers)
    assert gzip.decompress(compressed) == data
    assert _one_member(compressed) == data
    gunzip = subprocess.run(["gunzip", "-c"], input=compressed, capture_output=True, check=True)
    assert gunzip.stdout == data and gunzip.stderr == b""
    assert compressed[:4] == b"\x1f\x8b\x08\x00" and compressed[4:8] == b"\x00\x00\x00\x00"  # mtime 0


def test_the_default_block_size_round_trips_many_blocks_at_gzip_s_ratio():
    data = _sql_like(20 * BLOCK_SIZE + 333, seed=7)
    compressed = _compress(data, workers=2, block_size=BLOCK_SIZE, piece=1024 * 1024)
    assert _one_member(compressed) == data
    # Each block primed with the one before it: the ratio stays within a hair of one gzip stream's.
    assert len(compressed) <= len(gzip.compress(data, 6, mtime=0)) * 1.01


def test_the_same_input_gives_the_same_bytes_whatever_the_threads_and_the_writes():
    data = _sql_like(10 * BLOCK + 99, seed=3)
    first = _compress(data, workers=2)
    assert _compress(data, workers=2) == first
    assert _compress(data, workers=1) == first == _compress(data, workers=4)
    assert _compress(data, workers=2, piece=BLOCK) == _compress(data, workers=2, piece=7777) == first


def test_a_buffer_the_caller_reuses_after_write_does_not_change_what_is_compressed():
    data = _random(5 * BLOCK + 3)
    out = io.BytesIO()
    buffer = bytearray(data)
    with ParallelGzipWriter(out, workers=2, block_size=BLOCK) as writer:
        writer.write(buffer)
        buffer[:] = bytes(len(buffer))  # the caller's next read overwrites it while blocks still compress
        writer.write(memoryview(buffer)[:0])
    assert _one_member(out.getvalue()) == data


def test_crc32_combine_equals_the_crc_of_the_concatenation():
    rng = random.Random(5)
    for _ in range(50):
        a, b = rng.randbytes(rng.randrange(0, 5000)), rng.randbytes(rng.randrange(0, 5000))
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_the_sink_s_checksums_are_those_of_the_bytes_stored_and_of_the_sql(settings):
    settings.BACKUP_COMPRESS_WORKERS = 2
    sql = _sql_like(3 * 1024 * 1024 + 5, seed=11)
    stored = io.BytesIO()
    with GzipSqlSink(stored) as sink:
        for start in range(0, len(sql), 1024 * 1024 - 3):
            sink.write(sql[start:start + 1024 * 1024 - 3])
        result = sink.close()
    assert result.size == len(stored.getvalue())
    assert result.sha256 == hashlib.sha256(stored.getvalue()).hexdigest()
    assert (result.sql_size, result.sql_sha256) == (len(sql), hashlib.sha256(sql).hexdigest())
    assert _one_member(stored.getvalue()) == sql


class _Failing:
    def __init__(self, after: int):
        self.writes, self.after = 0, after

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes > self.after:
            raise OSError("disk full")


@pytest.mark.parametrize("after", [0, 1, 3])
def test_a_destination_that_fails_stops_the_threads_and_raises(after):
    writer = ParallelGzipWriter(_Failing(after), workers=2, block_size=BLOCK)
    with pytest.raises(OSError, match="disk full"):
        for _ in range(40):
            writer.write(_random(BLOCK))
        writer.close()
    assert _our_threads() == []
    with pytest.raises(ValueError):
        writer.write(b"more")  # a writer that failed takes nothing more
    with pytest.raises(ValueError):
        writer.close()  # nor passes for a whole file


def test_an_error_in_a_worker_thread_is_raised_in_the_caller_and_stops_the_others():
    # given a level zlib refuses: each block fails in the worker that compresses it
    out = io.BytesIO()
    with pytest.raises(ValueError):  # zlib: "Invalid initialization option"
        with ParallelGzipWriter(out, workers=2, block_size=BLOCK, level=42) as writer:
            for _ in range(20):
                writer.write(_random(BLOCK))
    assert _our_threads() == []
    assert out.getvalue() == b""


def test_a_dump_that_fails_mid_way_leaves_no_thread_behind(settings):
    settings.BACKUP_COMPRESS_WORKERS = 2
    with pytest.raises(RuntimeError):
        with GzipSqlSink(io.BytesIO()) as sink:
            sink.write(_sql_like(3 * 1024 * 1024))
            raise RuntimeError("pg_dump went away")
    assert _our_threads() == []


class _Blocking:
    """A destination whose writes wait until released: the writer's caller waits with it."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()
        self.out = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.entered.set()
        assert self.release.wait(timeout=120)
        self.out.write(data)


def test_the_input_accepted_is_bounded_while_the_destination_does_not_take_more():
    destination = _Blocking()
    writer = ParallelGzipWriter(destination, workers=2, block_size=BLOCK)
    data = _sql_like(64 * BLOCK, seed=9)
    accepted = []

    def feed():
        for start in range(0, len(data), BLOCK // 2):
            writer.write(data[start:start + BLOCK // 2])
            accepted.append(BLOCK // 2)
        writer.close()

    producer = threading.Thread(target=feed)
    producer.start()
    try:
        # when the destination's first write is waiting (the feeding thread is inside it)
        assert destination.entered.wait(timeout=120)
        # then the writer took no more than the blocks in flight and one being filled
        assert sum(accepted) <= (writer.max_in_flight + 1) * writer.block_size < len(data)
    finally:
        destination.release.set()
        producer.join()
    assert _one_member(destination.out.getvalue()) == data
    assert _our_threads() == []
