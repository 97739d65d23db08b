"""`manage.py` as a real child process of a test: same database, media and backups folders.

Used to kill an operation at a named step (CLINICA_KILL_AT, SIGKILL) or to pause
it there (CLINICA_STOP_AT, SIGSTOP) while the test acts as a concurrent user.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from django.conf import settings
from core.faults import KILL_AT_ENV, STOP_AT_ENV
from core.testing import child_environment

ROOT = Path(settings.BASE_DIR)


def child_environ(*, backups_dir: Path, **extra: str) -> dict[str, str]:
    """The test's settings for a child: its database, MEDIA_ROOT and local backups folder."""
    return child_environment(
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        BACKUPS_LOCAL_ROOT=str(backups_dir),
        BACKUP_TEMP_DIR=str(settings.BACKUP_TEMP_DIR),
        **extra,
    )


def manage(*args: str, backups_dir: Path, kill_at: str = "", log: Path) -> subprocess.CompletedProcess:
    """Run `manage.py args…` to its end (or its death at kill_at)."""
    extra = {KILL_AT_ENV: kill_at} if kill_at else {}
    with open(log, "wb") as output:
        return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, stdout=output,
                              stderr=subprocess.STDOUT, env=child_environ(backups_dir=backups_dir, **extra), timeout=120)


@contextmanager
def paused_at(point: str, *args: str, backups_dir: Path, log: Path) -> Iterator[subprocess.Popen]:
    """Start `manage.py args…`, and yield once it has stopped itself at point; SIGCONT afterwards.

    No sleeping: waitpid(WUNTRACED) returns the moment the child stops. The caller
    waits for the child's exit after the block.
    """
    output = open(log, "wb")
    child = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, stdout=output,
                             stderr=subprocess.STDOUT, env=child_environ(backups_dir=backups_dir, **{STOP_AT_ENV: point}))
    try:
        _pid, status = os.waitpid(child.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            child.returncode = os.waitstatus_to_exitcode(status)
            raise AssertionError(f"manage.py {' '.join(args)} ended before {point}: {log.read_text()[-2000:]}")
        yield child
        child.send_signal(signal.SIGCONT)
    except BaseException:
        if child.returncode is None:
            child.kill()
            child.send_signal(signal.SIGCONT)
            child.wait()
        raise
    finally:
        output.close()
