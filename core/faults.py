"""Named kill points, for tests that prove a crash at a given step leaves nothing half done.

The same idea as PostgreSQL's injection points: production code marks the
steps where dying would matter (`kill_point("restore.after_replay")`), and a
test starts the real process with CLINICA_KILL_AT naming one of them. The
process then sends itself SIGKILL there: no cleanup, no finally blocks, exactly
as the kernel's OOM killer or a deploy would end it. Unset, it costs one
dictionary lookup.

`CLINICA_KILL_AT=replay.fed@12345` kills once that many bytes went through a
counted stream (see `kill_after_bytes`).

`CLINICA_STOP_AT=<point>` pauses there instead (SIGSTOP): the test waits for the
stop (waitpid with WUNTRACED, no sleeping), changes the world as a concurrent
user would at that exact step, then lets the process go on with SIGCONT.
"""
from __future__ import annotations

import os
import signal

KILL_AT_ENV = "CLINICA_KILL_AT"
STOP_AT_ENV = "CLINICA_STOP_AT"


def _armed() -> tuple[str, int | None] | None:
    value = os.environ.get(KILL_AT_ENV)
    if not value:
        return None
    name, _, count = value.partition("@")
    return name, int(count) if count else None


def kill_point(name: str) -> None:
    """Die here, at once, if a test asked for it (or pause here, see STOP_AT_ENV)."""
    armed = _armed()
    if armed is not None and armed[0] == name and armed[1] is None:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(STOP_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGSTOP)


def kill_after_bytes(name: str) -> int | None:
    """How many bytes a counted stream may pass before the process must die, or None."""
    armed = _armed()
    return armed[1] if armed is not None and armed[0] == name else None


def die_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
