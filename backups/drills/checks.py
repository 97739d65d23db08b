"""What a restore drill checks once the dump is replayed (steps 4 and 6 of backups.drills' map):
the scratch schema's rows against those the backup recorded while writing them, and every
object of the backup against its sha256."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import psycopg2.extensions

from backups.drills.errors import DrillFilesError, DrillRowsMismatchError
from backups.dump.cached import dump_like_session
from backups.dump.tables import ALGORITHM, schema_table_digests, table_digest_empty
from backups.files.list import file_list_check
from backups.files.media import MISSING_LISTED, backup_files_check
from backups.models import BackupRecord

TABLES_LISTED = 20  # how many differing tables a failure names (the count is always there)


@contextmanager
def _replay_reading_session(timezone: str) -> Iterator:
    """The dump's session settings and time zone, in one read-only REPEATABLE READ transaction."""
    with dump_like_session(timezone) as raw:
        raw.autocommit = False
        raw.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        yield raw


def _printed_tables(session, schema: str) -> list[str]:
    """The schema's tables as pg_dump names them in COPY (quote_ident follows the same rule as its fmtId)."""
    with session.cursor() as cursor:
        cursor.execute("SELECT quote_ident(c.relname) FROM pg_class c WHERE c.relnamespace = %s::regnamespace "
                       "AND c.relkind IN ('r', 'p') ORDER BY 1", [f'"{schema}"'])
        return [name for (name,) in cursor.fetchall()]


def drill_rows_compare(*, backup: BackupRecord, scratch: str) -> dict:
    """Every table of the scratch schema read back and compared with the backup's record of it;
    DrillRowsMismatchError naming the tables that differ. A backup made before tables were
    recorded is only replayed: the report says so."""
    recorded = backup.manifest.get("table_checksums") or {}
    if recorded.get("algorithm") != ALGORITHM:
        return {"rows_checked": False}
    expected: dict = recorded["tables"]
    with _replay_reading_session(recorded["timezone"]) as session:
        present = _printed_tables(session, scratch)
        actual = schema_table_digests(session, scratch, present)
    differing = []
    # A table the dump wrote no rows for (the backup history) must come back empty.
    for table in sorted(set(expected) | set(present)):
        wanted, got = expected.get(table, table_digest_empty()), actual.get(table)
        if got != wanted:
            differing.append({"table": table, "expected_rows": wanted["rows"], "rows": None if got is None else got["rows"],
                              "missing": got is None})
    if differing:
        raise DrillRowsMismatchError(details={"tables": differing[:TABLES_LISTED], "count": len(differing)})
    return {"rows_checked": True, "tables": len(present), "rows": sum(item["rows"] for item in actual.values())}


def drill_files_check(*, backup: BackupRecord, schema: str) -> dict:
    """The backup's file list and every file object it names re-read against their sha256, as verify does."""
    problems = file_list_check(backup=backup) + backup_files_check(backup=backup, schema=schema)
    if problems:
        raise DrillFilesError(details={"count": len(problems), "problems": problems[:MISSING_LISTED]})
    return {"files_checked": backup.files.exclude(sha256="").values("sha256").distinct().count()}
