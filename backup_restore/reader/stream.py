"""The upload as a binary stream, gunzipped when it is gzip."""
from __future__ import annotations

import gzip
import io
from typing import BinaryIO


def open_backup_stream(source: BinaryIO) -> BinaryIO:
    """The upload as a binary stream, gunzipped when it starts with gzip's magic bytes."""
    if hasattr(source, "seek"):
        source.seek(0)
    magic = source.read(2)
    if hasattr(source, "seek"):
        source.seek(0)
    else:  # pragma: no cover
        source = io.BufferedReader(_Prefixed(magic, source))
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=source, mode="rb")
    return source


class _Prefixed(io.RawIOBase):  # pragma: no cover - only for non-seekable sources
    def __init__(self, prefix: bytes, rest: BinaryIO):
        self.prefix, self.rest = prefix, rest

    def readable(self):
        return True

    def readinto(self, b):
        data = self.prefix or self.rest.read(len(b))
        self.prefix = b""
        b[: len(data)] = data
        return len(data)
