"""The one rule for a patient file's name: it lies under its clinic's own prefix.

Every clinic's files share one media storage (a folder, or a bucket), so a name is
the only thing that keeps one clinic's radiographs from another's. Uploads make
names under `<schema>/` (clinica.models.radiografia_upload_to); every other way a
name can enter a clinic's rows (a JSON restore, a SQL restore, a file list read
back by `restore_backup_files`) and every place that reads or writes a file by a
row's name (a backup, a restore) checks it here first, so that no name, however
it is spelled, reaches another clinic's files, a path outside the media root, or a
log line.
"""
from __future__ import annotations

import os
import stat
import unicodedata
from enum import StrEnum

from django.core.files.storage import Storage
from django.utils.translation import gettext_lazy as _

# A FileField's default max_length; a name longer than its column could not have been
# stored by the application, and a bounded name keeps what reads it bounded too.
DEFAULT_MAX_LENGTH = 100


class NameRefused(StrEnum):
    """Why a name is refused; the value is what an error body and a record carry."""

    NOT_TEXT = "not_text"
    TOO_LONG = "too_long"
    CONTROL_CHARACTER = "control_character"
    ABSOLUTE = "absolute"
    BACKSLASH = "backslash"
    TRAVERSAL = "traversal"
    OUTSIDE_CLINIC = "outside_clinic"
    LINK = "link"
    NOT_A_FILE = "not_a_file"

    @property
    def message(self) -> str:
        """What a person reads about this refusal; never the name itself (it may be a patient's, or forged)."""
        return str(_MESSAGES[self])


_MESSAGES = {
    NameRefused.NOT_TEXT: _("El nombre del archivo debe ser un texto."),
    NameRefused.TOO_LONG: _("El nombre del archivo es más largo de lo que admite su campo."),
    NameRefused.CONTROL_CHARACTER: _("El nombre del archivo contiene caracteres de control (NUL, saltos de línea u otros)."),
    NameRefused.ABSOLUTE: _("El nombre del archivo es una ruta absoluta."),
    NameRefused.BACKSLASH: _("El nombre del archivo contiene barras invertidas."),
    NameRefused.TRAVERSAL: _("El nombre del archivo contiene tramos vacíos, «.» o «..»."),
    NameRefused.OUTSIDE_CLINIC: _("El nombre del archivo no está en la carpeta de esta clínica."),
    NameRefused.LINK: _("El nombre del archivo lleva, por un enlace, fuera de la carpeta de esta clínica."),
    NameRefused.NOT_A_FILE: _("El nombre no es el de un archivo (es una carpeta u otro objeto)."),
}


# NUL ends a C string (a traceback in os.stat), line breaks or escapes forge log lines,
# and a lone surrogate cannot be encoded into a file name. U+2028 and U+2029 are line
# breaks too (Zl, Zp, not Cc): str.splitlines and JavaScript log viewers break on them.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _has_control_character(name: str) -> bool:
    return any(unicodedata.category(character) in _REFUSED_CATEGORIES for character in name)


def media_name_refusal(schema: str, name: object, *, max_length: int = DEFAULT_MAX_LENGTH) -> NameRefused | None:
    """Why this name may not be one of this clinic's files, or None when it may.

    The empty name is a FileField without a file, and is allowed.
    """
    if not isinstance(name, str):
        return NameRefused.NOT_TEXT
    if name == "":
        return None
    if len(name) > max_length:
        return NameRefused.TOO_LONG
    if _has_control_character(name):
        return NameRefused.CONTROL_CHARACTER
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return NameRefused.ABSOLUTE
    if "\\" in name:  # a separator on some storages, a plain character on others
        return NameRefused.BACKSLASH
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return NameRefused.TRAVERSAL
    if len(parts) < 2 or parts[0] != schema:
        return NameRefused.OUTSIDE_CLINIC
    return None


def media_name_is_confined(schema: str, name: object, *, max_length: int = DEFAULT_MAX_LENGTH) -> bool:
    """Whether a non-empty name lies under this clinic's prefix (see media_name_refusal)."""
    return name != "" and media_name_refusal(schema, name, max_length=max_length) is None


def media_file_refusal(storage: Storage, schema: str, name: object, *, max_length: int = DEFAULT_MAX_LENGTH) -> NameRefused | None:
    """media_name_refusal, then what only the storage can tell about the name: on a local
    folder, a link on the way that leads elsewhere (the name would reach another clinic's
    file, or any file of the host), or something that is not a regular file (a folder, a
    FIFO that would block a reader forever). Object storage has neither: a key is a key."""
    refusal = media_name_refusal(schema, name, max_length=max_length)
    if refusal is not None or name == "":
        return refusal
    try:
        local = storage.path(name)
    except NotImplementedError:
        return None
    if os.path.realpath(local) != os.path.join(os.path.realpath(storage.location), name):
        return NameRefused.LINK
    try:
        mode = os.lstat(local).st_mode
    except FileNotFoundError:
        return None  # free: a restore may create it, a backup finds it missing
    return None if stat.S_ISREG(mode) else NameRefused.NOT_A_FILE
