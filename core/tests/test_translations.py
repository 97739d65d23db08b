"""The English catalog is complete, consistent with its .mo, and actually used by the API."""
from __future__ import annotations

import ast
import gettext
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

LC_MESSAGES = Path(settings.BASE_DIR) / "locale" / "en" / "LC_MESSAGES"
PO_PATH = LC_MESSAGES / "django.po"
MO_PATH = LC_MESSAGES / "django.mo"

PLACEHOLDER = re.compile(r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]")


def _unquote(line: str) -> str:
    # PO strings use C escapes, which are a subset of Python's string literals.
    return ast.literal_eval(line)


def parse_po(path: Path) -> list[dict]:
    """A small .po reader: one dict per entry with msgid, msgstr, flags, obsolete.

    Handles multi-line strings and `#,` flags; plural and msgctxt entries keep their
    msgid and join their msgstr[n] forms (the catalog has none today)."""
    entries: list[dict] = []
    entry: dict | None = None
    field: str | None = None

    def flush():
        if entry is not None and "msgid" in entry:
            entries.append(entry)

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        obsolete = line.startswith("#~")
        if obsolete:
            line = line[2:].strip()
        if not line:
            flush()
            entry, field = None, None
            continue
        if entry is None:
            entry = {"flags": set(), "obsolete": False}
        if obsolete:
            entry["obsolete"] = True
        if line.startswith("#,"):
            entry["flags"].update(flag.strip() for flag in line[2:].split(","))
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            entry[field] += _unquote(line)
        else:
            keyword, _, rest = line.partition(" ")
            field = "msgstr" if keyword.startswith("msgstr") else keyword
            if field == "msgstr" and "msgstr" in entry:
                entry["msgstr"] += "\0"  # another plural form
            else:
                entry.setdefault(field, "")
            entry[field] += _unquote(rest)
    flush()
    return entries


def messages() -> list[dict]:
    """The catalog's real messages: no header, no obsolete (#~) entries."""
    return [e for e in parse_po(PO_PATH) if e["msgid"] and not e["obsolete"]]


def test_the_catalog_has_messages():
    assert len(messages()) > 50


def test_every_message_is_translated():
    untranslated = [e["msgid"] for e in messages() if not e["msgstr"].replace("\0", "").strip()]
    assert untranslated == []


SOURCE_DIRS = ("core", "usuarios", "bitacora", "clinica", "backups", "backup_restore", "alertas")


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="xgettext (GNU gettext) is not installed")
def test_every_message_in_the_code_is_in_the_catalog(tmp_path):
    # The .po is only as complete as the last makemessages: read the code's messages afresh.
    base = Path(settings.BASE_DIR)
    sources = sorted(str(path.relative_to(base)) for folder in SOURCE_DIRS for path in (base / folder).rglob("*.py")
                     if "tests" not in path.parts and "migrations" not in path.parts)
    pot = tmp_path / "code.pot"
    subprocess.run(
        ["xgettext", "--language=Python", "--from-code=UTF-8", "--keyword=_", "--keyword=gettext", "--keyword=gettext_lazy",
         "--keyword=ngettext:1,2", "--keyword=ngettext_lazy:1,2", "-o", str(pot), *sources],
        cwd=base, check=True,
    )
    in_code = {e["msgid"] for e in parse_po(pot) if e["msgid"]} if pot.exists() else set()
    missing = sorted(in_code - {e["msgid"] for e in messages()})
    assert missing == [], "run: DEBUG=1 python manage.py makemessages -l en -i .venv, translate, compilemessages"


def test_no_fuzzy_entries():
    fuzzy = [e["msgid"] or "<header>" for e in parse_po(PO_PATH) if "fuzzy" in e["flags"]]
    assert fuzzy == []


def test_no_obsolete_entries_are_left():
    assert [e["msgid"] for e in parse_po(PO_PATH) if e["obsolete"]] == []


def test_placeholders_are_kept():
    mismatched = [
        (e["msgid"], e["msgstr"])
        for e in messages()
        if sorted(set(PLACEHOLDER.findall(e["msgid"]))) != sorted(set(PLACEHOLDER.findall(e["msgstr"])))
    ]
    assert mismatched == []


def test_mo_is_compiled_from_the_current_po():
    with MO_PATH.open("rb") as mo:
        catalog = gettext.GNUTranslations(mo)
    stale = [e["msgid"] for e in messages() if catalog.gettext(e["msgid"]) != e["msgstr"]]
    assert stale == [], "run: DEBUG=1 python manage.py compilemessages -l en -i .venv"


def test_backup_not_found_follows_accept_language(client_for):
    client = client_for("test_a", "admin")

    response = client.get("/api/backups/history/999999999/", HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 404
    assert response.json()["code"] == "backup_not_found"
    assert response.json()["message"] == "Backup not found."

    response = client.get("/api/backups/history/999999999/")
    assert response.status_code == 404
    assert response.json()["code"] == "backup_not_found"
    assert response.json()["message"] == "Backup no encontrado."
