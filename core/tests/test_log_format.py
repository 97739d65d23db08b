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


@pytest.mark.no_test_db
def test_an_exception_in_a_lines_arguments_shows_its_type_only():
    # given the two lines Celery writes when a task or a signal handler fails unexpectedly
    try:
        raise ValueError(f"no se pudo leer {PATIENT_PATH}")
    except ValueError as exc:
        exc_info = __import__("sys").exc_info()
        task_failed = logging.LogRecord(
            "celery.app.trace", logging.ERROR, __file__, 1, "Task %(name)s[%(id)s] %(description)s: %(exc)s",
            ({"name": "backups.tasks.backup_task", "id": "c0ffee", "description": "raised unexpected", "exc": repr(exc)[:40]},),
            exc_info=exc_info)
        handler_failed = logging.LogRecord("celery.utils.dispatch.signal", logging.ERROR, __file__, 1,
                                           "Signal handler %r raised: %r", ("reap", exc), exc_info=exc_info)
    formatter = RedactingFormatter("%(message)s")
    for record in (task_failed, handler_failed):
        # when they are formatted
        line = formatter.format(record).splitlines()[0]  # (then the traceback, redacted as above)
        # then the line keeps its words and the exception's type, and loses its message
        assert "juan-perez" not in line and "no se pudo" not in line
        assert "ValueError (mensaje omitido" in line
    assert "Task backups.tasks.backup_task[c0ffee] raised unexpected: " in formatter.format(task_failed)
    # and the record itself is unchanged for any other handler
    assert handler_failed.args[1] is exc_info[1]
