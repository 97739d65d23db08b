"""SQL backups and restores through the service vs the bare tools, in the same run.

    python bench/bench_sql.py --rows 1000000

- backup: `manage.py create_backup` vs `pg_dump --schema | gzip`, and the service's
  peak RSS at two sizes (it must not grow with the clinic);
- restore: `manage.py restore_backup` (staging replay + swap) vs
  `gunzip | psql --single-transaction` of the same dump into an empty database.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, django_setup, ensure_bench_tenant, measure, table  # noqa: E402


def _latest_backup_copy(schema: str, destination: Path):
    """The newest completed backup of a clinic, copied out of the backups storage."""
    from django_tenants.utils import schema_context

    from backups.models import BackupRecord
    from backups.storage.objects import storage_copy

    with schema_context(schema):
        backup = BackupRecord.objects.filter(status="completed").order_by("-created_at").first()
        with open(destination, "wb") as target:
            storage_copy(backup.file_path, target)
    return backup


def _baseline_restore(binaries, env: dict, dump: Path):
    """gunzip | psql of the service's own dump into a scratch database."""
    from django.db import connection

    scratch = f"bench_scratch_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{scratch}"')
    try:
        return measure(
            "gunzip | psql --single-transaction",
            f'gunzip -c "{dump}" | "{binaries.psql}" -q -v ON_ERROR_STOP=1 --single-transaction -d "{scratch}" > /dev/null',
            env=env,
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def _row(operation: str, run, baseline=None) -> tuple:
    """A table row; baseline None marks the baseline itself, False a run with no baseline."""
    if baseline is None:
        ratio = "1.00"
    elif baseline is False:
        ratio = "-"
    else:
        ratio = f"{run.seconds / baseline.seconds:.2f}"
    return (operation, run.label, f"{run.seconds:.2f}", ratio, f"{run.peak_rss_mb:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    django_setup()

    from backups.services import database_params, pg_binaries

    small_rows = max(args.rows // 10, 5000)
    large, small = f"bench_sql_{args.rows}", f"bench_sql_{small_rows}"
    ensure_bench_tenant(large, rows=args.rows)
    ensure_bench_tenant(small, rows=small_rows)
    binaries = pg_binaries()
    env = database_params().environ()
    manage = [sys.executable, str(ROOT / "manage.py")]
    dump_path = ROOT / "var" / f"bench_{large}.sql.gz"
    local_copy = ROOT / "var" / f"bench_{large}_service.sql.gz"

    baseline_dump = measure(
        "pg_dump | gzip", f'"{binaries.pg_dump}" --schema={large} --no-owner --no-privileges | gzip -6 > "{dump_path}"', env=env
    )
    service_backup = measure("create_backup (servicio)", [*manage, "create_backup", "--tenant", large])
    service_backup_small = measure(f"create_backup, {small_rows:,} filas", [*manage, "create_backup", "--tenant", small])
    backup = _latest_backup_copy(large, local_copy)
    baseline_restore = _baseline_restore(binaries, env, local_copy)
    service_restore = measure(
        "restore_backup (servicio)", [*manage, "restore_backup", "--tenant", large, "--id", str(backup.pk), "--yes"]
    )

    results = [
        _row("backup", baseline_dump),
        _row("backup", service_backup, baseline_dump),
        _row("backup", service_backup_small, False),
        _row("restore", baseline_restore),
        _row("restore", service_restore, baseline_restore),
    ]
    print(f"\nClínica de {args.rows:,} filas; backup de {backup.file_size / 1024 / 1024:.1f} MB (gzip)")
    print(table(results, ("operación", "qué", "segundos", "× base", "RSS pico MB")))
    print(
        f"\nRSS del backup: {service_backup_small.peak_rss_mb:.0f} MB con {small_rows:,} filas, "
        f"{service_backup.peak_rss_mb:.0f} MB con {args.rows:,} (×{service_backup.peak_rss_mb / service_backup_small.peak_rss_mb:.2f})"
    )
    dump_path.unlink(missing_ok=True)
    local_copy.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
