"""Log lines an operator can read without reading a patient's data.

A traceback names where the code failed, which an operator needs, and the exception's
message, which may hold anything the code was handling: a media path (a radiograph's
file name is often the patient's), a row's values in a database error, a dump's line.
So tracebacks in our logs keep every frame (file, line, function, source line) and the
type of every exception in the chain, and drop messages, except the stable code of the
project's own errors. The same goes for an exception a line puts in its message: Celery's
"Task … raised unexpected: %(exc)s" (its repr) and "Signal handler %r raised: %r" (the object).
"""
from __future__ import annotations

import copy
import logging
import traceback

from core.exceptions import DomainError


def _redacted(exc: BaseException) -> str:
    if isinstance(exc, DomainError):
        return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc.code}"
    return f"{type(exc).__module__}.{type(exc).__qualname__} (mensaje omitido: puede contener datos de pacientes)"


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of exc and of the exceptions it chains, without their messages."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_list(traceback.extract_tb(current.__traceback__)))
        parts.append(f"Traceback (most recent call last):\n{frames}{_redacted(current)}")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nLo anterior ocurrió mientras se manejaba:\n\n".join(reversed(parts))


def _redacted_argument(argument, exc: BaseException | None):
    if isinstance(argument, BaseException):
        return _redacted(argument)
    # The repr of the exception being logged, whole or cut short (Celery's safe_repr).
    if exc is not None and isinstance(argument, str) and argument.startswith(f"{type(exc).__name__}("):
        return _redacted(exc)
    return argument


class RedactingFormatter(logging.Formatter):
    """logging.Formatter whose tracebacks keep their frames and lose their messages, and whose
    lines show an exception among their arguments as its type (or the project's code) alone."""

    def format(self, record: logging.LogRecord) -> str:
        if record.args:
            exc = record.exc_info[1] if record.exc_info else None
            record = copy.copy(record)  # other handlers see the record as it was logged
            if isinstance(record.args, dict):
                record.args = {key: _redacted_argument(value, exc) for key, value in record.args.items()}
            else:
                record.args = tuple(_redacted_argument(value, exc) for value in record.args)
        return super().format(record)

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        _type, value, _tb = ei
        return redacted_traceback(value) if value is not None else ""
