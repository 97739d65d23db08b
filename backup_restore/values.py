"""What PostgreSQL cannot store, found in Python before it is asked to, so that a refusal names the field.

PostgreSQL refuses a NUL character in text and in jsonb, and a number jsonb cannot
hold (Infinity: `1e200000` in a JSON field parses to it); COPY would fail on the
whole batch with an error that names a line of its input and quotes it in the
server log. The importer checks each row's JSON text with one substring search
and one length test; only a row that fails them is walked here.
"""
from __future__ import annotations

import math
from typing import Any

from django.utils.translation import gettext as _

# How the importer's JSON text spells a NUL (a lone surrogate arrives as one too: see reader/).
NUL_ESCAPE = "\\u0000"
# The most a jsonb value holds (2^28 - 1 bytes): each staged row is one.
MAX_JSONB_BYTES = (1 << 28) - 1


def row_text_suspect(line: str) -> bool:
    """Whether a row's JSON text may hold something PostgreSQL refuses (cheap; false alarms are fine)."""
    return NUL_ESCAPE in line or len(line) * 4 > MAX_JSONB_BYTES


def value_refusal(value: Any) -> str | None:
    """Why PostgreSQL cannot store this value as parsed from the file, or None."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return _("El texto contiene un carácter que PostgreSQL no admite (NUL, \\u0000, o un "
                         "sustituto UTF-16 suelto como \\ud800).")
        elif isinstance(item, float):  # a JSON field's number, as json_fit made it
            if not math.isfinite(item):
                return _("El número está fuera del rango que PostgreSQL puede guardar.")
        elif isinstance(item, dict):
            for key, member in item.items():
                pending.append(key)
                pending.append(member)
        elif isinstance(item, list):
            pending.extend(item)
    return None


def too_big_refusal(size: int) -> str:
    return _("La fila ocupa %(size)s bytes; PostgreSQL guarda a lo sumo %(max)s en un valor jsonb.") % {
        "size": size, "max": MAX_JSONB_BYTES}
