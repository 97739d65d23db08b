"""SQL backups and restores through the service vs the bare tools, in the same run.

    python bench/bench_sql.py --rows 1000000 [--repeat 3]

- backup: `manage.py create_backup` vs `pg_dump --schema | gzip`, and the service's
  peak RSS at two sizes (it must not grow with the clinic);
- restore: `manage.py restore_backup` (staging replay + swap) vs
  `gunzip | psql --single-transaction` of the same dump into an empty database.

Each measure is taken --repeat times, the sides taking turns (bare tool, service, bare
tool, service…), and shown as its median with the range. Beside each command's wall
time, the operation's own time as its record tells it: a backup's BackupRecord and a
restore's RestoreJob, created → finished (the command's start-up is the difference), and
the CPU time of the client processes (ours, or gunzip and psql; not the server's), which
a shared machine's load moves far less than the wall time.
Every restore replays the same backup, so each starts from the same clinic.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Repeated, alternated, django_setup, ensure_bench_tenant, measure, table  # noqa: E402


def _record_seconds(model, schema: str) -> float:
    """The newest record's created → finished, in seconds."""
    from django_tenants.utils import schema_context

    with schema_context(schema):
        newest = model.objects.order_by("-created_at", "-id").first()
    return (newest.finished_at - newest.created_at).total_seconds()


def _service(label: str, command: list[str], model, schema: str):
    """A side that runs a manage.py command and reads its record's own time."""
    def run():
        measured = measure(label, command)
        measured.inside = _record_seconds(model, schema)
        return measured

    return run


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
    """A side: gunzip | psql of the service's own dump into a new, empty scratch database."""
    from django.db import connection

    def run():
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

    return run


def _row(operation: str, measured: Repeated, baseline: Repeated | None | bool = None) -> tuple:
    """A table row; baseline None marks the baseline itself, False a measure with no baseline."""
    if baseline is None:
        ratio = "1.00"
    elif baseline is False:
        ratio = "-"
    else:
        ratio = measured.ratio(baseline)
    return (operation, measured.label, measured.wall(), measured.inside(), ratio, measured.cpu(), f"{measured.peak_rss_mb:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="Mediciones de cada lado, alternadas.")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    django_setup()

    from backups.models import BackupRecord, RestoreJob
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

    def baseline_dump():
        return measure("pg_dump | gzip",
                       f'"{binaries.pg_dump}" --schema={large} --no-owner --no-privileges | gzip -6 > "{dump_path}"', env=env)

    backups = [Repeated(runs) for runs in alternated([
        baseline_dump,
        _service("create_backup (servicio)", [*manage, "create_backup", "--tenant", large], BackupRecord, large),
        _service(f"create_backup, {small_rows:,} filas", [*manage, "create_backup", "--tenant", small], BackupRecord, small),
    ], args.repeat)]
    backup = _latest_backup_copy(large, local_copy)
    restores = [Repeated(runs) for runs in alternated([
        _baseline_restore(binaries, env, local_copy),
        _service("restore_backup (servicio)", [*manage, "restore_backup", "--tenant", large, "--id", str(backup.pk), "--yes"],
                 RestoreJob, large),
    ], args.repeat)]

    bare_dump, service_backup, service_backup_small = backups
    bare_restore, service_restore = restores
    results = [
        _row("backup", bare_dump),
        _row("backup", service_backup, bare_dump),
        _row("backup", service_backup_small, False),
        _row("restore", bare_restore),
        _row("restore", service_restore, bare_restore),
    ]
    print(f"\nClínica de {args.rows:,} filas; backup de {backup.file_size / 1024 / 1024:.1f} MB (gzip); "
          f"medianas de {args.repeat} (mín–máx), lados alternados; carga (1 min) al empezar {load_at_start:.2f}, al terminar {os.getloadavg()[0]:.2f}")
    print(table(results, ("operación", "qué", "segundos", "registro (creado → fin) s", "× base (medianas)", "CPU cliente s",
                          "RSS pico MB")))
    print(
        f"\nRSS del backup: {service_backup_small.peak_rss_mb:.0f} MB con {small_rows:,} filas, "
        f"{service_backup.peak_rss_mb:.0f} MB con {args.rows:,} (×{service_backup.peak_rss_mb / service_backup_small.peak_rss_mb:.2f})"
    )
    dump_path.unlink(missing_ok=True)
    local_copy.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
