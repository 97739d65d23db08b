"""JSON export/restore (backup_restore) against dumpdata/loaddata and pg_dump/psql, same run.

    DJANGO_SETTINGS_MODULE=core.settings DEBUG=1 .venv/bin/python bench/bench_json.py --rows 1000000

Every measurement is a child process (Django start-up included, ~0.5 s) and its
peak RSS is that process tree's (the PostgreSQL server's memory is not counted).
With --baseline-rows N (< --rows), dumpdata/loaddata run on a second clinic of N
rows; the table then shows our tools measured on that same clinic too (the ratio
that counts) and marks any figure extrapolated to --rows as such.

Each pair (the bare tool, ours) is measured --repeat times in turns (theirs, ours,
theirs, ours…) and shown as its median with the range. Beside the wall time, a
restore's own time as its audit entry records it (duration_ms; an export records
none), and the CPU time of the client processes (not the server's). Every restore
loads the same file, so each starts from the same clinic.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Measured, Repeated, alternated, django_setup, ensure_bench_tenant, measure, table  # noqa: E402

MANAGE = [sys.executable, str(ROOT / "manage.py")]


def row_count(schema_name: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(n_live_tup)::bigint FROM pg_stat_user_tables WHERE schemaname = %s AND relname LIKE 'clinica\\_%%'",
            [schema_name],
        )
        estimate = cursor.fetchone()[0] or 0
        total = 0
        cursor.execute(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = %s AND relname LIKE 'clinica\\_%%'", [schema_name]
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'SELECT count(*) FROM "{schema_name}"."{name}"')
            total += cursor.fetchone()[0]
    return total or estimate


def truncate_clinica(schema_name: str) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT string_agg(format('%%I.%%I', schemaname, relname), ', ') FROM pg_stat_user_tables "
            "WHERE schemaname = %s AND relname LIKE 'clinica\\_%%'",
            [schema_name],
        )
        cursor.execute(f"TRUNCATE {cursor.fetchone()[0]}")


def pg_env_and_args() -> tuple[dict, list[str], str]:
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    bin_dir = settings.PG_BIN_DIR
    env = {"PGPASSWORD": db.get("PASSWORD") or ""}
    args = ["-h", db["HOST"] or "localhost", "-p", str(db["PORT"] or 5432), "-U", db["USER"]]
    return env, args, bin_dir


def _restore_inside(schema: str) -> float:
    """The newest JSON restore's own time as its audit entry records it (details.duration_ms)."""
    from django_tenants.utils import schema_context

    from backup_restore.actions import TenantDataAction
    from bitacora.models import Bitacora

    with schema_context(schema):
        entry = Bitacora.objects.filter(action=TenantDataAction.RESTORE, outcome="ok").order_by("-created_at", "-id").first()
    return entry.details["duration_ms"] / 1000


def _import(label: str, schema: str, path: Path):
    def run() -> Measured:
        measured = measure(label, [*MANAGE, "import_tenant", "--tenant", schema, str(path), "--replace"])
        measured.inside = _restore_inside(schema)
        return measured

    return run


def ours_and_django(schema: str, work: Path, *, django: bool = True) -> dict[str, Callable[[], Measured]]:
    """The sides measured on one clinic: our export and restore (plain JSON), and Django's
    dumpdata and loaddata (into the emptied tables, as a replace does) unless not django."""
    ours_json, django_json = work / f"{schema}.json", work / f"{schema}.dumpdata.json"
    sides = {
        "export": lambda: measure("export_tenant", [*MANAGE, "export_tenant", "--tenant", schema, "-o", str(ours_json), "-v", "0"]),
        "restore": _import("import_tenant --replace", schema, ours_json),
    }
    if django:
        def loaddata() -> Measured:
            truncate_clinica(schema)
            return measure("loaddata", [*MANAGE, "tenant_command", "loaddata", f"--schema={schema}", str(django_json)])

        sides["dumpdata"] = lambda: measure(
            "dumpdata clinica", [*MANAGE, "tenant_command", "dumpdata", f"--schema={schema}", "clinica", "-o", str(django_json)])
        sides["loaddata"] = loaddata
    return sides


def gzip_and_pg(schema: str, work: Path) -> dict[str, Callable[[], Measured]]:
    """Our gzipped export and its restore, and pg_dump | gzip and gunzip | psql into an empty database."""
    env, args, bin_dir = pg_env_and_args()
    from django.db import connection

    pg_dump = os.path.join(bin_dir, "pg_dump") if bin_dir else "pg_dump"
    psql = os.path.join(bin_dir, "psql") if bin_dir else "psql"
    dump, ours_gz = work / f"{schema}.sql.gz", work / f"{schema}.json.gz"
    database = connection.settings_dict["NAME"]
    scratch = "bench_json_scratch"
    q = " ".join(f"'{a}'" for a in args)
    admin = f"'{psql}' {q} -v ON_ERROR_STOP=1 -q -d '{database}'"

    def scratch_sql(*statements: str) -> None:
        subprocess.run(admin + "".join(f' -c "{statement}"' for statement in statements), shell=True, check=True,
                       env={**os.environ, **env, "PGOPTIONS": "-c client_min_messages=warning"}, stdout=subprocess.DEVNULL)

    def psql_restore() -> Measured:
        scratch_sql(f"DROP DATABASE IF EXISTS {scratch}", f"CREATE DATABASE {scratch}")
        try:
            return measure("gunzip | psql (empty database)",
                           f"gunzip -c '{dump}' | '{psql}' {q} -v ON_ERROR_STOP=1 -q -d {scratch} > /dev/null", env=env)
        finally:
            scratch_sql(f"DROP DATABASE IF EXISTS {scratch}")

    return {
        "pg_dump": lambda: measure(
            "pg_dump | gzip", f"'{pg_dump}' {q} --schema={schema} --no-owner --no-privileges '{database}' | gzip > '{dump}'", env=env),
        "export_gz": lambda: measure(
            "export_tenant --gzip", [*MANAGE, "export_tenant", "--tenant", schema, "-o", str(ours_gz), "--gzip", "-v", "0"]),
        "psql": psql_restore,
        "restore_gz": _import("import_tenant --replace (.gz)", schema, ours_gz),
    }


def measured_in_turns(sides: dict[str, Callable[[], Measured]], pairs: list[tuple[str, str]], repeat: int) -> dict[str, Repeated]:
    """Each pair (baseline, ours) measured in turns, `repeat` times each, pair after pair in the order given."""
    results = {}
    for baseline, ours in pairs:
        base_runs, our_runs = alternated([sides[baseline], sides[ours]], repeat)
        results[baseline], results[ours] = Repeated(base_runs), Repeated(our_runs)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--baseline-rows", type=int, default=0,
                        help="measure dumpdata/loaddata on a clinic of this size instead (0: same size)")
    parser.add_argument("--repeat", type=int, default=3, help="measures of each side, taken in turns")
    parser.add_argument("--keep", action="store_true", help="keep the files in the work directory")
    options = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    django_setup()

    big = f"bench_json_{options.rows}"
    ensure_bench_tenant(big, rows=options.rows)
    actual = row_count(big)
    work = Path(tempfile.mkdtemp(prefix="bench_json_"))
    try:
        print(f"clínica {big}: {actual:,} filas de clinica; archivos en {work}", flush=True)
        baseline = options.baseline_rows if 0 < options.baseline_rows < options.rows else 0
        gz_pairs = [("pg_dump", "export_gz"), ("psql", "restore_gz")]
        if baseline:
            small = f"bench_json_{baseline}"
            ensure_bench_tenant(small, rows=baseline)
            small_n = row_count(small)
            base = measured_in_turns(ours_and_django(small, work), [("dumpdata", "export"), ("loaddata", "restore")],
                                     options.repeat)
            # Ours alone on the big clinic: the export first, since the restore reads its file.
            ours = measured_in_turns({**ours_and_django(big, work, django=False), **gzip_and_pg(big, work)},
                                     [("export", "restore"), *gz_pairs], options.repeat)
        else:
            ours = measured_in_turns({**ours_and_django(big, work), **gzip_and_pg(big, work)},
                                     [("dumpdata", "export"), ("loaddata", "restore"), *gz_pairs], options.repeat)
        sizes = {k: (work / f"{big}{ext}").stat().st_size for k, ext in
                 [("export", ".json"), ("export_gz", ".json.gz"), ("pg_dump", ".sql.gz")]}
        rows = []

        def add(m: Repeated, n: int, note: str = "", ratio: str = ""):
            rows.append((m.label, f"{n:,}", m.wall(), m.inside(), m.cpu(), f"{m.peak_rss_mb:.0f}", ratio, note))

        def times(theirs: Repeated, mine: Repeated, what: str, factor: float = 1.0) -> str:
            return f"{theirs.seconds * factor / mine.seconds:.1f}× vs {what}"

        if baseline:
            factor = actual / small_n
            add(base["export"], small_n, "same size as dumpdata", times(base["dumpdata"], base["export"], "dumpdata"))
            add(base["dumpdata"], small_n, "baseline")
            add(base["restore"], small_n, "same size as loaddata", times(base["loaddata"], base["restore"], "loaddata"))
            add(base["loaddata"], small_n, "baseline")
            add(ours["export"], actual, "", times(base["dumpdata"], ours["export"], "dumpdata", factor) + f" EXTRAPOLATED ×{factor:.1f}")
            add(ours["restore"], actual, "", times(base["loaddata"], ours["restore"], "loaddata", factor) + f" EXTRAPOLATED ×{factor:.1f}")
        else:
            add(ours["export"], actual, "", times(ours["dumpdata"], ours["export"], "dumpdata"))
            add(ours["dumpdata"], actual)
            add(ours["restore"], actual, "replace=true", times(ours["loaddata"], ours["restore"], "loaddata"))
            add(ours["loaddata"], actual, "into emptied tables")
        add(ours["export_gz"], actual, f"{sizes['export_gz'] / 1e6:.1f} MB", f"{ours['export_gz'].ratio(ours['pg_dump'])}× pg_dump|gzip")
        add(ours["pg_dump"], actual, f"{sizes['pg_dump'] / 1e6:.1f} MB")
        add(ours["restore_gz"], actual, "replace=true", f"{ours['restore_gz'].ratio(ours['psql'])}× psql")
        add(ours["psql"], actual, "into an empty database")
        print(f"\nmedians of {options.repeat} (min–max), each pair's sides in turns; load (1 min) at start "
              f"{load_at_start:.2f}, at the end {os.getloadavg()[0]:.2f}")
        print(table(rows, ("operación", "filas", "segundos", "propio s", "CPU cliente s", "RSS pico MB", "relación", "nota")))
        print(f"JSON sin comprimir: {sizes['export'] / 1e6:.1f} MB. «propio»: la restauración según su entrada de "
              "bitácora (duration_ms); la exportación no registra su duración (su entrada sólo marca el final).")
    finally:
        if options.keep:
            print(f"archivos conservados en {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
