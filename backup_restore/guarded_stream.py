"""What an upload may cost while it is read: its inflated size, any single value's size, and
escapes the JSON parser would get wrong (lone surrogates, huge numbers), screened on the way."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import BinaryIO

import ijson
from django.conf import settings


try:  # the C backend is several times faster; fall back to whatever ijson picked
    _ijson = ijson.get_backend("yajl2_c")
except Exception:  # pragma: no cover
    _ijson = ijson

PARSE_BUFFER = 1 << 18  # what the parser reads at a time, and the slack the value limit allows


@dataclass(frozen=True)
class ReadLimits:
    """How much a file may inflate to, and how big one row or header entry may be (bytes of JSON)."""

    max_bytes: int
    max_value_bytes: int

    @classmethod
    def from_settings(cls) -> "ReadLimits":
        return cls(max_bytes=settings.RESTORE_MAX_INFLATED_BYTES, max_value_bytes=settings.RESTORE_MAX_VALUE_BYTES)


class LimitExceeded(Exception):
    """Raised inside the parser's read(); BackupReader turns it into a RestoreError naming the row."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


# An escaped surrogate, with the backslashes before it: a valid pair, or one alone.
_SURROGATE_ESCAPES = re.compile(
    rb"(\\+)u(?:[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|(?P<lone>[dD][89a-fA-F][0-9a-fA-F]{2}))"
)
_NUL_ESCAPE = b"\\u0000"
_ESCAPE_MAX = 12  # the longest escape the screen looks at: a surrogate pair


def _whole_escapes_end(buf: bytes) -> int:
    """Where to split `buf` so that no escape (nor the backslashes before it) is cut in two."""
    first = buf.find(b"\\", max(0, len(buf) - _ESCAPE_MAX))
    if first < 0:
        return len(buf)
    return len(buf[: first + 1].rstrip(b"\\"))  # back to the start of that run of backslashes


def _screened(buf: bytes, end: int) -> tuple[bytes, int]:
    """buf[:end] with each lone surrogate escape replaced by \\u0000 (same length), and where it ended."""
    if b"\\u" not in buf:
        return buf[:end], end
    out = None
    pos = 0
    while (match := _SURROGATE_ESCAPES.search(buf, pos)) and match.start() < end:
        if match.end() > end:  # a pair across the split: both halves go to the next read
            end = match.start()
            break
        run = len(match.group(1))
        if run % 2 == 0:  # an escaped backslash, then a plain "u": look again after it
            pos = match.start() + run + 1
            continue
        if match.group("lone"):
            start = match.start() + run - 1
            out = out if out is not None else bytearray(buf)
            out[start : start + len(_NUL_ESCAPE)] = _NUL_ESCAPE
        pos = match.end()
    return (bytes(out[:end]) if out is not None else buf[:end]), end


_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")


class GuardedStream:
    """The inflated upload as the parser reads it: counted, bounded and screened (see the module docstring)."""

    def __init__(self, inner: BinaryIO, limits: ReadLimits):
        self._inner = inner
        self._carry = b""
        self.limits = limits
        self.total = 0
        self.mark = 0  # `total` when the row or header entry being read began
        self.row: list | None = None  # the row being read, and how many values it may hold
        self.row_max = 0
        self._max_digits = sys.get_int_max_str_digits()
        self._digit_run = 0  # digits at the end of what the parser was given
        self._refuse_next: str | None = None

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        if self._refuse_next:  # raised now, the parser has given every event before the refused value
            raise LimitExceeded(self._refuse_next)
        while True:
            data = self._inner.read(size if size and size > 0 else PARSE_BUFFER)
            self._count(len(data))
            buf = self._carry + data if self._carry else data
            if not data:  # the end: whatever was held back goes out
                self._carry = b""
                return self._digits_checked(_screened(buf, len(buf))[0])
            out, end = _screened(buf, _whole_escapes_end(buf))
            self._carry = buf[end:]
            if out:  # an empty answer would mean the end to the parser
                return self._digits_checked(out)

    def _digits_checked(self, out: bytes) -> bytes:
        """`out`, or the part before a run of too many digits (refused at the next read)."""
        limit = self._max_digits
        if not limit or not out:
            return out
        flat = out.translate(_DIGITS_AS_ZEROS)
        head = len(flat) - len(flat.lstrip(b"0"))
        if self._digit_run + head > limit:
            raise LimitExceeded("digits")
        found = flat.find(b"0" * (limit + 1))
        if found > 0:
            self._refuse_next = "digits"
            return out[:found]
        self._digit_run = self._digit_run + head if head == len(flat) else len(flat) - len(flat.rstrip(b"0"))
        return out

    def _count(self, size: int) -> None:
        self.total += size
        if self.total > self.limits.max_bytes:
            raise LimitExceeded("inflated")
        # One read of slack: the read that finished the previous row counts from this row's mark.
        if self.total - self.mark > self.limits.max_value_bytes + PARSE_BUFFER:
            raise LimitExceeded("value")
        if self.row is not None and len(self.row) > self.row_max:
            raise LimitExceeded("row")
