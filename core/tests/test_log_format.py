"""Tracebacks in the logs name where the code failed, never the data it was handling."""
import logging

import pytest
from django.core.exceptions import SuspiciousFileOperation

from backups.errors import BackupFileError
from core.log_format import RedactingFormatter

PATIENT_PATH = "clinica_demo/radiografias/juan-perez-gomez.png"


def _formatted(raise_it) -> str:
    try:
        raise_it()
    except Exception:
        record = logging.LogRecord("backups", logging.ERROR, __file__, 1, "backup %s failed", ("x.sql.gz",),
                                   exc_info=__import__("sys").exc_info())
    return RedactingFormatter("%(levelname)s %(message)s").format(record)


def _open_patient_file():
    open(f"/nonexistent/{PATIENT_PATH}", "rb")


def _chained():
    try:
        raise SuspiciousFileOperation(f"The joined path ({PATIENT_PATH}) is located outside of the base path")
    except SuspiciousFileOperation as exc:
        raise BackupFileError(details={"operation": "read"}) from exc


@pytest.mark.no_test_db
@pytest.mark.parametrize("raise_it", [_open_patient_file, _chained])
def test_a_logged_traceback_keeps_its_frames_and_drops_every_message(raise_it):
    text = _formatted(raise_it)
    assert "juan-perez" not in text
    assert raise_it.__name__ in text  # the frame where it failed
    assert "Traceback (most recent call last)" in text


@pytest.mark.no_test_db
def test_the_projects_own_errors_keep_their_code():
    text = _formatted(_chained)
    assert "BackupFileError: backup_file_error" in text
    assert "SuspiciousFileOperation (mensaje omitido" in text


@pytest.mark.no_test_db
def test_the_configured_log_handler_uses_the_redacting_formatter():
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.formatter, RedactingFormatter)
