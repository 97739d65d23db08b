"""JSON export/restore (backup_restore) against dumpdata/loaddata and pg_dump/psql, same run.

    DJANGO_SETTINGS_MODULE=core.settings DEBUG=1 .venv/bin/python bench/bench_json.py --rows 1000000

Every measurement is a child process (Django start-up included, ~0.5 s) and its
peak RSS is that process tree's (the PostgreSQL server's memory is not counted).
With --baseline-rows N (< --rows), dumpdata/loaddata run on a second clinic of N
rows; the table then shows our tools measured on that same clinic too (the ratio
that counts) and marks any figure extrapolated to --rows as such.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Measured, django_setup, ensure_bench_tenant, measure, table  # noqa: E402

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


def run_pair_set(schema: str, work: Path, *, ours_only: bool = False, theirs_only: bool = False) -> dict[str, Measured]:
    results: dict[str, Measured] = {}
    ours_json = work / f"{schema}.json"
    django_json = work / f"{schema}.dumpdata.json"
    if not theirs_only:
        results["export"] = measure("export_tenant", [*MANAGE, "export_tenant", "--tenant", schema, "-o", str(ours_json), "-v", "0"])
        results["export_gz"] = measure(
            "export_tenant --gzip", [*MANAGE, "export_tenant", "--tenant", schema, "-o", str(ours_json) + ".gz", "--gzip", "-v", "0"]
        )
        results["restore"] = measure("import_tenant --replace", [*MANAGE, "import_tenant", "--tenant", schema, str(ours_json), "--replace"])
        results["restore_gz"] = measure(
            "import_tenant --replace (.gz)", [*MANAGE, "import_tenant", "--tenant", schema, str(ours_json) + ".gz", "--replace"]
        )
    if not ours_only:
        results["dumpdata"] = measure(
            "dumpdata clinica", [*MANAGE, "tenant_command", "dumpdata", f"--schema={schema}", "clinica", "-o", str(django_json)]
        )
        truncate_clinica(schema)  # loaddata into the emptied tables, as a replace does
        results["loaddata"] = measure("loaddata", [*MANAGE, "tenant_command", "loaddata", f"--schema={schema}", str(django_json)])
    return results


def run_pg(schema: str, work: Path) -> dict[str, Measured]:
    env, args, bin_dir = pg_env_and_args()
    from django.db import connection

    pg_dump = os.path.join(bin_dir, "pg_dump") if bin_dir else "pg_dump"
    psql = os.path.join(bin_dir, "psql") if bin_dir else "psql"
    dump = work / f"{schema}.sql.gz"
    database = connection.settings_dict["NAME"]
    scratch = "bench_json_scratch"
    q = " ".join(f"'{a}'" for a in args)
    results = {
        "pg_dump": measure(
            "pg_dump | gzip",
            f"'{pg_dump}' {q} --schema={schema} --no-owner --no-privileges '{database}' | gzip > '{dump}'",
            env=env,
        )
    }
    admin = f"'{psql}' {q} -v ON_ERROR_STOP=1 -q -d '{database}'"
    import subprocess

    subprocess.run(f'{admin} -c "DROP DATABASE IF EXISTS {scratch}" -c "CREATE DATABASE {scratch}"', shell=True, check=True,
                   env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        results["psql"] = measure(
            "gunzip | psql (empty database)",
            f"gunzip -c '{dump}' | '{psql}' {q} -v ON_ERROR_STOP=1 -q -d {scratch} > /dev/null",
            env=env,
        )
    finally:
        subprocess.run(f'{admin} -c "DROP DATABASE IF EXISTS {scratch}"', shell=True, env={**os.environ, **env},
                       stdout=subprocess.DEVNULL)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--baseline-rows", type=int, default=0,
                        help="measure dumpdata/loaddata on a clinic of this size instead (0: same size)")
    parser.add_argument("--keep", action="store_true", help="keep the files in the work directory")
    options = parser.parse_args()
    django_setup()

    big = f"bench_json_{options.rows}"
    ensure_bench_tenant(big, rows=options.rows)
    actual = row_count(big)
    work = Path(tempfile.mkdtemp(prefix="bench_json_"))
    try:
        print(f"clínica {big}: {actual:,} filas de clinica; archivos en {work}", flush=True)
        baseline = options.baseline_rows if 0 < options.baseline_rows < options.rows else 0
        ours = run_pair_set(big, work, ours_only=bool(baseline))
        pg = run_pg(big, work)
        sizes = {k: (work / f"{big}{ext}").stat().st_size for k, ext in
                 [("export", ".json"), ("export_gz", ".json.gz"), ("pg_dump", ".sql.gz")]}
        rows = []

        def add(m: Measured, n: int, note: str = "", ratio: str = ""):
            rows.append((m.label, f"{n:,}", f"{m.seconds:.2f}", f"{m.peak_rss_mb:.0f}", ratio, note))

        if baseline:
            small = f"bench_json_{baseline}"
            ensure_bench_tenant(small, rows=baseline)
            small_n = row_count(small)
            base = run_pair_set(small, work)
            factor = actual / small_n
            add(base["export"], small_n, "same size as dumpdata", f"{base['dumpdata'].seconds / base['export'].seconds:.1f}× vs dumpdata")
            add(base["dumpdata"], small_n, "baseline")
            add(base["restore"], small_n, "same size as loaddata", f"{base['loaddata'].seconds / base['restore'].seconds:.1f}× vs loaddata")
            add(base["loaddata"], small_n, "baseline")
            add(ours["export"], actual, "", f"{base['dumpdata'].seconds * factor / ours['export'].seconds:.1f}× vs dumpdata EXTRAPOLATED ×{factor:.1f}")
            add(ours["restore"], actual, "", f"{base['loaddata'].seconds * factor / ours['restore'].seconds:.1f}× vs loaddata EXTRAPOLATED ×{factor:.1f}")
        else:
            add(ours["export"], actual, "", f"{ours['dumpdata'].seconds / ours['export'].seconds:.1f}× vs dumpdata")
            add(ours["dumpdata"], actual)
            add(ours["restore"], actual, "replace=true", f"{ours['loaddata'].seconds / ours['restore'].seconds:.1f}× vs loaddata")
            add(ours["loaddata"], actual, "into emptied tables")
        add(ours["export_gz"], actual, f"{sizes['export_gz'] / 1e6:.1f} MB", f"{pg['pg_dump'].seconds / ours['export_gz'].seconds:.2f}× vs pg_dump|gzip")
        add(pg["pg_dump"], actual, f"{sizes['pg_dump'] / 1e6:.1f} MB")
        add(ours["restore_gz"], actual, "replace=true", f"{pg['psql'].seconds / ours['restore_gz'].seconds:.2f}× vs psql")
        add(pg["psql"], actual, "into an empty database")
        print(table(rows, ("operación", "filas", "segundos", "RSS pico MB", "relación", "nota")))
        print(f"JSON sin comprimir: {sizes['export'] / 1e6:.1f} MB")
    finally:
        if options.keep:
            print(f"archivos conservados en {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
