"""The platform's page of every clinic's backups at hundreds of clinics: time and queries.

    python bench/bench_platform.py --clinics 500

Clinic schemas are made cheaply in a scratch database: one clinic is created for real
(migrations), the others clone its tables with `CREATE TABLE … (LIKE … INCLUDING ALL)`
in SQL, get a handful of backup records each (completed, failed, some clinics overdue)
and are registered as clinics without running their migrations. Then, in the same run:
- the page (GET /admin/plataforma/backups/ as a superuser): wall time and queries;
- its selector alone (backups.selectors.backup_summary_list);
- the baseline it replaces: a tenant_context switch and ORM queries per clinic.
The scratch database is dropped afterwards (--keep keeps it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import scratch_database, table  # noqa: E402

TEMPLATE = "bench_plantilla"
CLONE_BATCH = 20  # clinics per transaction: each new table holds locks until its commit


# One DO block per batch: every table of the template clinic cloned into each new schema,
# and its backup history: `backups` records over as many nights, one night in seven
# failed, and every fifth clinic two days late.
CLONE_SQL = r"""
DO $$
DECLARE s text; t text; late interval;
BEGIN
  FOR i IN FIRST..LAST LOOP
    s := 'bench_c' || lpad(i::text, 5, '0');
    EXECUTE format('CREATE SCHEMA %I', s);
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'TEMPLATE' LOOP
      EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL)', s, t, 'TEMPLATE', t);
    END LOOP;
    late := CASE WHEN mod(i, 5) = 0 THEN interval '2 days' ELSE interval '0' END;
    EXECUTE format($sql$
      INSERT INTO %I.backups_backuprecord (file_name, file_path, file_size, backup_type, created_at, status, sha256,
             error, error_code, progress_bytes, finished_at, manifest, keep, integrity, files_count, files_size,
             sql_sha256)
      SELECT 'backup_' || %L || '_' || g || '.sql.gz', %L || '/automatic/' || g || '.sql.gz',
             CASE WHEN mod(g, 7) = 0 THEN 0 ELSE 1000000 + g * 1000 END, 'automatic',
             now() - %L::interval - (g - 1) * interval '1 day' - interval '1 hour',
             CASE WHEN mod(g, 7) = 0 THEN 'failed' ELSE 'completed' END, '',
             CASE WHEN mod(g, 7) = 0 THEN 'pg_dump terminó con código 1' ELSE '' END, '', 0,
             now() - %L::interval - (g - 1) * interval '1 day', '{}', false, '', 0, 0, ''
      FROM generate_series(1, BACKUPS) AS g$sql$, s, s, s, late, late);
  END LOOP;
END $$;
"""


def _clone_clinics(count: int, backups: int) -> None:
    from django.db import connection, transaction

    for first in range(1, count + 1, CLONE_BATCH):
        last = min(first + CLONE_BATCH - 1, count)
        statement = (CLONE_SQL.replace("FIRST", str(first)).replace("LAST", str(last)).replace("TEMPLATE", TEMPLATE)
                     .replace("BACKUPS", str(backups)))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)


def _register_clinics(count: int) -> None:
    from core.models import Tenant

    Tenant.objects.bulk_create(
        [Tenant(schema_name=f"bench_c{i:05d}", slug=f"bench-c{i:05d}", nombre=f"Clínica bench {i:05d}") for i in range(1, count + 1)],
        batch_size=1000,
    )


def _timed(run, repeat: int) -> tuple[float, int, int]:
    """Median wall time (ms) over `repeat` runs, and the queries of one run (all, and without SET search_path)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run()  # warm: URL resolvers, templates, the catalog's caches
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    connection.queries_log.clear()  # DEBUG keeps 9,000 queries at most: count on an empty log
    with CaptureQueriesContext(connection) as captured:
        run()
    real = sum(not query["sql"].startswith("SET search_path") for query in captured)
    return statistics.median(seconds) * 1000, len(captured), real


def _per_clinic_baseline() -> None:
    """What the selector replaces: switch into each clinic and ask the ORM."""
    from django.db.models import Count, Q, Sum
    from django_tenants.utils import tenant_context

    from backups.models import BackupRecord
    from core.selectors import tenant_clinics

    for clinic in tenant_clinics(active_only=True):
        with tenant_context(clinic):
            BackupRecord.objects.aggregate(n=Count("id", filter=Q(status="completed")),
                                           size=Sum("file_size", filter=Q(status="completed")))
            BackupRecord.objects.filter(status="completed").order_by("-created_at").first()
            BackupRecord.objects.filter(status="failed").order_by("-created_at").first()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clinics", type=int, default=300)
    parser.add_argument("--backups", type=int, default=10, help="Registros de backup por clínica.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="No borrar la base de datos de prueba.")
    parser.add_argument("--rows", help="(de make bench; no se usa aquí)")
    args = parser.parse_args()

    with scratch_database("bench_platform", keep=args.keep):
        _measure(args)


def _measure(args) -> None:
    from django.core.management import call_command
    from django.test import Client
    from django_tenants.utils import schema_context

    from backups.selectors import backup_summary_list
    from core.models import Tenant
    from core.services import public_tenant_ensure
    from usuarios.models import Usuario

    started = time.perf_counter()
    call_command("migrate_schemas", "--shared", "--noinput", verbosity=0)
    public_tenant_ensure(domains=["localhost"])
    Tenant(schema_name=TEMPLATE, slug="bench-plantilla", nombre="Plantilla").save(verbosity=0)  # real migrations
    _clone_clinics(args.clinics, args.backups)
    _register_clinics(args.clinics)
    with schema_context("public"):
        Usuario.objects.create_superuser("bench@plataforma.local", "bench-clave-123", nombre="Bench", apellido="Plataforma")
    print(f"{args.clinics + 1} clínicas ({args.backups} backups cada una) preparadas en {time.perf_counter() - started:.1f} s")

    client = Client(HTTP_HOST="localhost")
    client.login(username="bench@plataforma.local", password="bench-clave-123")

    def page():
        response = client.get("/admin/plataforma/backups/")
        assert response.status_code == 200, response.status_code

    summaries = backup_summary_list()
    rows = [
        ("página /admin/plataforma/backups/", *_timed(page, args.repeat)),
        ("selector backup_summary_list", *_timed(backup_summary_list, args.repeat)),
        ("línea base: tenant_context + ORM por clínica", *_timed(_per_clinic_baseline, args.repeat)),
    ]
    print(f"\n{len(summaries)} clínicas activas, {sum(s.overdue for s in summaries)} atrasadas\n")
    print(table([(label, f"{ms:.0f}", total, real) for label, ms, total, real in rows],
                ("medición (mediana)", "ms", "consultas", "sin SET search_path")))
    print(f"\nselector / línea base: {rows[1][1] / rows[2][1]:.2f} del tiempo")


if __name__ == "__main__":
    main()
