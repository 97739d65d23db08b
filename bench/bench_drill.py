"""Restore drills: what the per-table checksums cost a backup, and what a drill costs against a restore.

    python bench/bench_drill.py --rows 1000000

In a scratch database on the project's server (dropped at the end):
1. One clinic filled with demo data (clinic_fill, about --rows rows).
2. Its backup through the service (backup_create, in this process), on both dump paths (the
   cached structure, and pg_dump with BACKUP_STRUCTURE_CACHE off), alternately with the table
   checksums (backups.dump.tables) on and off (their methods replaced by no-ops for the
   measure only); median of --repeat each. The cost is the difference, in % of the backup.
3. A drill of the last backup (drill_run: copy, replay into a scratch schema, compare every
   table, files) against an in-place restore of the same backup (restore_backup's service),
   median of --repeat each.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ensure_bench_tenant, median_seconds, scratch_database, table  # noqa: E402

CLINIC = "bench_drill"


class _ChecksumsTimed:
    """The table checksums' own time, summed around their methods: the cost without the machine's noise."""

    def __enter__(self):
        from backups.dump.tables import TableDigests

        self.seconds = 0.0
        self.saved = {name: getattr(TableDigests, name) for name in ("feed", "table_data")}

        def timed(method):
            def run(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return method(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - started
            return run

        for name, method in self.saved.items():
            setattr(TableDigests, name, timed(method))
        return self

    def __exit__(self, *exc):
        from backups.dump.tables import TableDigests

        for name, method in self.saved.items():
            setattr(TableDigests, name, method)


class _ChecksumsOff:
    """The table checksums' methods as no-ops, for the measure of what they cost."""

    def __enter__(self):
        from backups.dump.tables import TableDigests

        self.saved = {name: getattr(TableDigests, name) for name in ("feed", "table_data")}
        TableDigests.feed = lambda self, chunk: None
        TableDigests.table_data = lambda self, data, start=0, end=None: None
        return self

    def __exit__(self, *exc):
        from backups.dump.tables import TableDigests

        for name, method in self.saved.items():
            setattr(TableDigests, name, method)


def _checksum_cost(repeat: int) -> list[tuple]:
    from django.conf import settings
    from django_tenants.utils import schema_context

    from backups.services import backup_create
    from bitacora.services import AuditContext

    def backup() -> float:
        started = time.perf_counter()
        with schema_context(CLINIC):
            done = backup_create(context=AuditContext.system("bench_drill"))
        assert done.status == "completed"
        return time.perf_counter() - started

    rows = []
    for path, cache in (("estructura en caché", True), ("pg_dump", False)):
        settings.BACKUP_STRUCTURE_CACHE = cache
        backup()  # warm: the reference built, the pages in cache
        with_checksums, without = [], []
        for _ in range(repeat):  # alternated, so that drift on a shared machine hits both alike
            with_checksums.append(backup())
            with _ChecksumsOff():
                without.append(backup())
        on_s, off_s = statistics.median(with_checksums), statistics.median(without)
        own = []
        for _ in range(repeat):
            with _ChecksumsTimed() as timed:
                total = backup()
            own.append(timed.seconds / total * 100)
        rows.append((path, f"{off_s:.3f}", f"{on_s:.3f}", f"{(on_s - off_s) / off_s * 100:+.1f} %",
                     f"{statistics.median(own):.2f} %"))
    settings.BACKUP_STRUCTURE_CACHE = True
    return rows


def _drill_vs_restore(repeat: int) -> list[tuple]:
    from django_tenants.utils import schema_context

    from backups.drills.run import drill_run
    from backups.restore import backup_restore_in_place
    from backups.selectors import backup_last_drilled
    from backups.services import backup_create
    from bitacora.services import AuditContext

    context = AuditContext.system("bench_drill")
    with schema_context(CLINIC):
        backup = backup_create(context=context)  # with its checksums (the cost's last backup may be without)
        drilled = []

        def drill() -> None:
            done = drill_run(context=context, backup_id=backup.pk)
            assert done.drill_status == "passed", done.drill_error
            drilled.append(done.drill_seconds)

        drills, restores, phases = [], [], []
        for _ in range(repeat):  # alternated, so that drift on a shared machine hits both alike
            drills.append(median_seconds(drill, 1))
            phases.append(backup_last_drilled().drill_report["seconds"])
            restores.append(median_seconds(lambda: backup_restore_in_place(context=context, backup_id=backup.pk, confirm=CLINIC), 1))
        drill_seconds, restore_seconds = statistics.median(drills), statistics.median(restores)
        print("  fases del simulacro (mediana, s):",
              {phase: round(statistics.median(seconds[phase] for seconds in phases), 3) for phase in phases[0]})
    return [("restauración en la clínica (réplica, archivos, intercambio)", f"{restore_seconds:.3f}", "1.00"),
            ("simulacro completo (copia, réplica, comparación, archivos)", f"{drill_seconds:.3f}",
             f"{drill_seconds / restore_seconds:.2f}"),
            ("  su «tiempo de restauración» (copia, réplica, migración)", f"{statistics.median(drilled):.3f}",
             f"{statistics.median(drilled) / restore_seconds:.2f}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="Conservar la base de prueba.")
    args, _unknown = parser.parse_known_args()
    with scratch_database("bench_drill", keep=args.keep):
        from django.core.management import call_command

        call_command("migrate_schemas", "--shared", "--noinput", verbosity=0)
        ensure_bench_tenant(CLINIC, rows=args.rows)
        print(f"\nCosto de las sumas por tabla en el backup ({args.rows:,} filas, mediana de {args.repeat}, alternadas):")
        print(table(_checksum_cost(args.repeat), ("camino del dump", "sin sumas (s)", "con sumas (s)", "diferencia",
                                                  "tiempo propio de las sumas")))
        print(f"\nSimulacro contra restauración del mismo backup (mediana de {args.repeat}):")
        print(table(_drill_vs_restore(args.repeat), ("operación", "segundos", "× restauración")))


if __name__ == "__main__":
    main()
