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


def _latest_backup_copy(schema_name: str):
    """The clinic's newest completed backup record, and its object copied to a local file."""
    from django_tenants.utils import schema_context

    from backups.models import BackupRecord
    from backups.storage import backup_storage

    with schema_context(schema_name):
        backup = BackupRecord.objects.filter(status="completed").order_by("-created_at").first()
        local_copy = ROOT / "var" / f"bench_{schema_name}_service.sql.gz"
        with backup_storage().open(backup.file_path) as source, open(local_copy, "wb") as target:
            while chunk := source.read(1024 * 1024):
                target.write(chunk)
    return backup, local_copy


def _psql_into_scratch_database(dump: Path, *, psql: Path, env: dict):
    """The bare tools' restore: the dump replayed by psql into a database of its own, dropped after."""
    from django.db import connection

    scratch = f"bench_scratch_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{scratch}"')
    try:
        return measure(
            "gunzip | psql --single-transaction",
            f'gunzip -c "{dump}" | "{psql}" -q -v ON_ERROR_STOP=1 --single-transaction -d "{scratch}" > /dev/null',
            env=env,
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


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

    baseline_dump = measure(
        "pg_dump | gzip", f'"{binaries.pg_dump}" --schema={large} --no-owner --no-privileges | gzip -6 > "{dump_path}"', env=env
    )
    service_backup = measure("create_backup (servicio)", [*manage, "create_backup", "--tenant", large])
    service_backup_small = measure(f"create_backup, {small_rows:,} filas", [*manage, "create_backup", "--tenant", small])

    backup, local_copy = _latest_backup_copy(large)
    baseline_restore = _psql_into_scratch_database(local_copy, psql=binaries.psql, env=env)
    service_restore = measure(
        "restore_backup (servicio)", [*manage, "restore_backup", "--tenant", large, "--id", str(backup.pk), "--yes"]
    )

    results = [
        ("backup", baseline_dump.label, f"{baseline_dump.seconds:.2f}", "1.00", f"{baseline_dump.peak_rss_mb:.0f}"),
        ("backup", service_backup.label, f"{service_backup.seconds:.2f}", f"{service_backup.seconds / baseline_dump.seconds:.2f}", f"{service_backup.peak_rss_mb:.0f}"),
        ("backup", service_backup_small.label, f"{service_backup_small.seconds:.2f}", "-", f"{service_backup_small.peak_rss_mb:.0f}"),
        ("restore", baseline_restore.label, f"{baseline_restore.seconds:.2f}", "1.00", f"{baseline_restore.peak_rss_mb:.0f}"),
        ("restore", service_restore.label, f"{service_restore.seconds:.2f}", f"{service_restore.seconds / baseline_restore.seconds:.2f}", f"{service_restore.peak_rss_mb:.0f}"),
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
