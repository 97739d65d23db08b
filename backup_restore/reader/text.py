"""The upload's text, a block at a time, and JSON values read from it value by value, every limit applied."""
from __future__ import annotations

import codecs
import json
import json.scanner
import re
from decimal import Decimal
from typing import Any, BinaryIO

from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.guarded_stream import PARSE_BUFFER, LimitExceeded
from backup_restore.reader.base import _STREAM_ERRORS, MAX_JSON_DEPTH, _Reader, _reason


# Python's JSON scanner, as C code: one call parses a whole row. Numbers with a fraction or an
# exponent become Decimal, as ijson gives them with use_float=False; NaN and Infinity, which
# the scanner would accept, are not JSON.
def _not_json_constant(name: str):
    raise json.JSONDecodeError("Invalid literal", name, 0)


_scanner = json.scanner.c_make_scanner
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_not_json_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SEPARATOR = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
_CONTAINERS = (list, dict)
_NUMBERS = (int, Decimal)
_TRAILING_AT = re.compile(r"( starting)? at$")
_NUMBER_GOES_ON = re.compile(r"[0-9.eE+-]*").fullmatch  # all the text left could be more of the number
# A scalar the text ends in may go on in the next block: one failing this close to the end
# (the longest literal, a \uXXXX pair) is read again once the next block is in.
_NEAR_END = 16


class JsonText(_Reader):
    """BackupReader's text: read a block at a time through the GuardedStream, values scanned or
    built level by level from it, a refusal naming where the reader is."""

    def __init__(self, stream: BinaryIO, **options):
        super().__init__(stream, **options)
        self._scan = _scanner(_DECODER)
        self._undecoded = b""  # a character the block cut, for the next
        self._broken: BaseException | None = None  # bytes that are not UTF-8, refused at the next read
        self._text = ""
        self._pos = 0
        self._eof = False

    # -- the text, a block at a time

    def _fill(self, keep: int | None = None) -> bool:
        """Read the next block onto the text, dropping what is before `keep` (else _pos); False at the end."""
        if self._eof:
            return False
        try:
            if self._broken is not None:
                raise self._broken
            data = self._guard.read(PARSE_BUFFER)
            more = self._decoded(data)
        except LimitExceeded as exc:
            raise self._refusal(exc) from None
        except UnicodeDecodeError as exc:  # its message would quote the byte: only why
            raise errors.InvalidJSONError(details=self._at({"reason": _reason(f"parse error: {exc.reason}")})) from None
        except _STREAM_ERRORS as exc:
            raise errors.InvalidJSONError(details=self._at({"reason": _reason(exc)})) from None
        self._eof = not data and self._broken is None
        keep = self._pos if keep is None else keep
        self._text = self._text[keep:] + more if keep < len(self._text) else more
        self._pos -= keep
        return True

    def _decoded(self, data: bytes) -> str:
        """The block as text; bytes that are not UTF-8 end it, refused once the text before them is read."""
        data = self._undecoded + data if self._undecoded else data
        try:
            text, used = codecs.utf_8_decode(data, "strict", not data)
        except UnicodeDecodeError as exc:
            self._broken = exc
            return data[: exc.start].decode()
        self._undecoded = data[used:]
        return text

    def _item_begins(self) -> None:
        """A row or header entry begins at _pos: the value limit counts from its first byte."""
        tail = self._text[self._pos:]
        self._guard.mark = self._guard.total - (len(tail) if tail.isascii() else len(tail.encode()))

    def _at(self, details: dict) -> dict:
        return {"model": self._label, **details} if isinstance(self._label, str) else details

    def _syntax(self, message: str) -> errors.InvalidJSONError:
        if self._eof and self._pos >= len(self._text):
            message = _("El archivo termina antes de tiempo.")
        else:  # the json module's message, without the position it would be followed by
            message = _reason(f"parse error: {_TRAILING_AT.sub('', message)}")
        return errors.InvalidJSONError(details=self._at({"reason": message}))

    def _peek(self) -> str:
        """The next character that is not white space ('' at the end of the file); _pos is on it."""
        while True:
            self._pos = _WHITESPACE.match(self._text, self._pos).end()
            if self._pos < len(self._text):
                return self._text[self._pos]
            if not self._fill():
                return ""

    def _expect(self, char: str, message: str) -> None:
        if self._peek() != char:
            raise self._syntax(message)
        self._pos += 1

    def _member_follows(self, close: str, first: bool) -> bool:
        """Inside a list or object whose `close` is `]` or `}`, after its opening (first) or a member:
        False past its end, True with _pos at the next member (past its comma). After a comma a
        member must follow: `[1,]` is the member reader's error."""
        char = self._peek()
        if char == close:
            self._pos += 1
            return False
        if not first:
            if char != ",":
                raise self._syntax("Expecting ',' delimiter")
            self._pos += 1
        return True

    # -- values, value by value

    def _scalar(self):
        """A string, number or literal at _pos, read on while it may go on past the text held."""
        while True:
            start = self._pos
            try:
                value, end = self._scan(self._text, start)
            except StopIteration:
                failed, message = start, "Expecting value"
            except json.JSONDecodeError as exc:
                if exc.msg.startswith("Unterminated") and self._string_read_on(start):
                    continue
                failed, message = (len(self._text) if exc.msg.startswith("Unterminated") else exc.pos), exc.msg
            except (ValueError, ArithmeticError):  # a number Python cannot hold
                failed, message = len(self._text), "Invalid number"
            else:  # a number cut after `1.` or `1e` is read as 1: one the text may cut is read again
                if self._eof or type(value) not in _NUMBERS or not _NUMBER_GOES_ON(self._text, end):
                    self._pos = end
                    return value
                failed, message = end, ""
            if self._eof or len(self._text) - failed > _NEAR_END or not self._fill(keep=start):
                raise self._syntax(message or "Expecting value")

    def _string_read_on(self, start: int) -> bool:
        """The text from the string at `start` on, read on until a block holds a quote (False at the end).

        The blocks wait in a list, joined once: a string read by concatenating each block to
        what came before held the value limit twice over while it grew, and scanned it again
        at every block."""
        if self._eof:
            return False
        pieces = [self._text[start:]]
        self._text, self._pos = "", 0
        while self._fill():
            pieces.append(self._text)
            if '"' in self._text:
                break
            self._text, self._pos = "", 0
        self._text, self._pos = "".join(pieces), 0
        return True

    def _value(self):
        """One JSON value, containers built level by level: deeper than MAX_JSON_DEPTH is refused."""
        char = self._peek()
        if char != "[" and char != "{":
            if char == "":
                raise self._syntax("Expecting value")
            return self._scalar()
        self._pos += 1
        root: Any = [] if char == "[" else {}
        stack = [root]
        first = True
        while stack:
            top = stack[-1]
            if not self._member_follows("]" if type(top) is list else "}", first):
                stack.pop()
                first = False
                continue
            first = False
            char = self._peek()
            if type(top) is dict:
                if char != '"':
                    raise self._syntax("Expecting property name enclosed in double quotes")
                key = self._scalar()
                self._expect(":", "Expecting ':' delimiter")
                char = self._peek()
            if char == "[" or char == "{":
                if len(stack) >= MAX_JSON_DEPTH:
                    raise self._refusal(LimitExceeded("depth"))
                self._pos += 1
                child: Any = [] if char == "[" else {}
                stack.append(child)
                first = True
            else:
                child = self._scalar()
            if type(top) is list:
                top.append(child)
            else:
                top[key] = child
        return root

    def _wrong_shape(self, error: errors.RestoreError) -> errors.RestoreError:
        """`error` for a JSON value of the wrong kind; a parse error for what is no JSON value at all."""
        if self._peek() not in ("{", "["):
            self._value()  # a parse error is the parser's, as EventReader says it
        return error
