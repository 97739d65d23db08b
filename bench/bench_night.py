"""Ten thousand clinics in one database: the night (backups, then drills of a seventh), one reaper
pass, the platform page, and one clinic's backup against the same backup alone.

    python bench/bench_night.py                                  # 10,000 clinics
    python bench/bench_night.py --clinics 2000 --night-sample 200

In a scratch database on the project's server (dropped at the end unless --keep):
1. One clinic made for real (migrations) and filled with demo data (clinic_fill at --scale): the
   clinic measured. Its backup through the service alone in the database (backup_create, the
   structure cache warm): median of --repeat.
2. The other clinics cloned by replaying its `pg_dump --schema` under new names (as bench_scale:
   the same structure and rows, no migrations), up to --clinics; each given --history backup
   records of past nights (SQL), as the page and the reaper find them after weeks.
3. At --clinics: the measured clinic's backup again (median of --repeat), and its ratio to 1.
4. One reaper pass over every clinic with nothing to reap (reap(), median of --repeat).
5. The platform page, GET /admin/plataforma/backups/ as a superuser (Django's test client in
   this process, a session login, median of --repeat), and its queries.
6. The night on a real Celery worker of 2 processes (Redis at --redis, keys under a prefix of
   this run): --night-sample clinics spread over all of them (every k-th by name) get their
   backup job, queued as the cron queues them; once every one ended, a seventh of them get a
   restore drill job. Each phase is timed from its first job queued to its last one ended.
   HOW IT IS EXTRAPOLATED: the per-clinic cost of each phase, measured among all --clinics
   schemas (where the catalog's size shows), times the clinics a real night does: all of
   them for the backups, --clinics / BACKUP_DRILL_EVERY_DAYS for the drills. The sample's
   jobs run in parallel on the 2 processes as a night's do, so the per-clinic cost already
   includes that parallelism; queueing 10,000 jobs (seconds) is left out. Window: 4 h.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, clinics_from_dump, measured_clinic, median_seconds, scratch_database, table  # noqa: E402

CLINIC = "bench_noche"
PREFIX = "bench_c"
CONTEXT_LABEL = "bench_night"
WINDOW_HOURS = 4

# --history records of past nights in each clone, completed but one night in seven failed.
HISTORY_SQL = r"""
DO $$
DECLARE s text;
BEGIN
  FOR s IN SELECT unnest(SCHEMAS) LOOP
    EXECUTE format($sql$
      INSERT INTO %I.backups_backuprecord (file_name, file_path, file_size, backup_type, created_at, status, sha256,
             error, error_code, progress_bytes, finished_at, manifest, keep, integrity, files_count, files_size,
             sql_size, sql_sha256, warnings)
      SELECT 'backup_' || %L || '_' || g || '.sql.gz', %L || '/automatic/' || g || '.sql.gz',
             CASE WHEN mod(g, 7) = 0 THEN 0 ELSE 100000 + g END, 'automatic',
             now() - g * interval '1 day', CASE WHEN mod(g, 7) = 0 THEN 'failed' ELSE 'completed' END, '',
             CASE WHEN mod(g, 7) = 0 THEN 'pg_dump terminó con código 1' ELSE '' END, '', 0, now() - g * interval '1 day',
             '{}', false, '', 0, 0, 0, '', '[]'
      FROM generate_series(1, COUNT) AS g$sql$, s, s, s);
  END LOOP;
END $$;
"""


def _backup_measured() -> None:
    from django_tenants.utils import schema_context

    from backups.services import backup_create
    from bitacora.services import AuditContext

    with schema_context(CLINIC):
        done = backup_create(context=AuditContext.system(CONTEXT_LABEL))
    assert done.status == "completed" and done.manifest["dump"]["method"] == "structure_cache", done.manifest.get("dump")


def _history(schemas: list[str], count: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for start in range(0, len(schemas), 200):
            names = ",".join(f"'{schema}'" for schema in schemas[start:start + 200])  # the bench's own names
            cursor.execute(HISTORY_SQL.replace("SCHEMAS", f"ARRAY[{names}]").replace("COUNT", str(count)))


def _database_size() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return cursor.fetchone()[0]


def _prepare(args) -> list[str]:
    binaries, params, sql = measured_clinic(CLINIC, scale=args.scale)
    env = params.environ()
    _backup_measured()  # warm: the reference built, the cache written
    alone = median_seconds(_backup_measured, args.repeat)
    print(f"su backup, sola en la base: {alone:.3f} s", flush=True)
    started = time.perf_counter()
    clinics_from_dump(CLINIC, 1, args.clinics - 1, sql, binaries, env, prefix=PREFIX)
    clones = [f"{PREFIX}{i:05d}" for i in range(1, args.clinics)]
    _history(clones, args.history)
    print(f"{args.clinics:,} clínicas ({args.history} backups pasados cada una) en {time.perf_counter() - started:.0f} s; "
          f"base de {_database_size()}", flush=True)
    return [alone]


def _page(args) -> tuple[float, int]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django_tenants.utils import schema_context

    from usuarios.models import Usuario

    with schema_context("public"):
        Usuario.objects.create_superuser("bench@plataforma.local", "bench-clave-123", nombre="Bench", apellido="Noche")
    client = Client(HTTP_HOST="localhost")
    assert client.login(username="bench@plataforma.local", password="bench-clave-123")

    def page() -> None:
        response = client.get("/admin/plataforma/backups/")
        assert response.status_code == 200, response.status_code

    page()  # warm: URL resolvers, templates
    seconds = median_seconds(page, args.repeat)
    with CaptureQueriesContext(connection) as captured:
        page()
    return seconds, sum(not query["sql"].startswith("SET search_path") for query in captured)


def _wait(condition, what: str, worker, log_path: Path, timeout: float = 4 * 3600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what}: el worker terminó o no acabó a tiempo:\n" + log_path.read_text()[-3000:])
        time.sleep(0.5)


def _count(schemas: list[str], where: str, params: list) -> int:
    """Records matching `where` in these clinics' backup tables: one UNION ALL per 200 clinics."""
    from django.db import connection

    from core.schemas import quote_identifier

    total = 0
    with connection.cursor() as cursor:
        for start in range(0, len(schemas), 200):
            batch = schemas[start:start + 200]
            union = " UNION ALL ".join(f"SELECT count(*) AS n FROM {quote_identifier(schema)}.backups_backuprecord WHERE {where}"
                                       for schema in batch)
            cursor.execute(f"SELECT sum(n) FROM ({union}) AS counts", params * len(batch))
            total += cursor.fetchone()[0] or 0
    return total


def _night(args, work: Path) -> tuple[float, float, int, int]:
    """Step 6: the sample's backups, then a seventh of them drilled, on a real worker of 2 processes."""
    from dataclasses import asdict

    from django.conf import settings
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from backups.jobs.enqueue import backup_enqueue
    from backups.models import BackupRecord
    from backups.tasks import drill_task
    from bitacora.services import AuditContext
    from core.selectors import tenant_clinics

    clinics = list(tenant_clinics(active_only=True).order_by("schema_name"))
    sample = clinics[:: max(1, len(clinics) // args.night_sample)][: args.night_sample]
    drilled = sample[:: settings.BACKUP_DRILL_EVERY_DAYS]
    schemas = [clinic.schema_name for clinic in sample]
    log_path = work / "worker.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "core", "worker", "--concurrency=2", "-l", "info",
                                   "--without-heartbeat", "--without-gossip", "--without-mingle", "-n", f"{uuid.uuid4().hex[:6]}@%h"],
                                  env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait(lambda: " ready." in log_path.read_text(), "arranque", worker, log_path, timeout=120)
        context = AuditContext.system(CONTEXT_LABEL)
        started, since = time.perf_counter(), timezone.now()
        for clinic in sample:  # as create_backup --all-tenants queues them
            with tenant_context(clinic):
                backup_enqueue(context=context, backup_type=BackupRecord.Type.AUTOMATIC)
        _wait(lambda: _count(schemas, "created_at >= %s AND status IN ('completed', 'failed')", [since]) >= len(sample),
              "backups", worker, log_path)
        backups = time.perf_counter() - started
        failed = _count(schemas, "created_at >= %s AND status = 'failed'", [since])
        started, since = time.perf_counter(), timezone.now()
        for clinic in drilled:
            with tenant_context(clinic):
                drill_task.delay(asdict(context))
        done = [clinic.schema_name for clinic in drilled]
        _wait(lambda: _count(done, "drill_finished_at >= %s", [since]) >= len(drilled), "simulacros", worker, log_path)
        drills = time.perf_counter() - started
        failed += _count(done, "drill_finished_at >= %s AND drill_status <> 'passed'", [since])
        return backups / len(sample), drills / len(drilled), len(sample), failed
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clinics", type=int, default=10_000)
    parser.add_argument("--scale", type=float, default=0.2, help="Escala de clinic_fill de la clínica medida.")
    parser.add_argument("--history", type=int, default=10, help="Backups pasados por clínica clonada.")
    parser.add_argument("--night-sample", type=int, default=300, help="Clínicas de la noche medidas (repartidas).")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--keep", action="store_true", help="No borrar la base de datos de prueba.")
    parser.add_argument("--rows", help="(de make bench; no se usa aquí)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_night_"))
    prefix = f"bench-night-{uuid.uuid4().hex[:8]}:"
    try:
        with scratch_database("bench_night", keep=args.keep, BACKUPS_LOCAL_ROOT=str(work / "backups"),
                              MEDIA_ROOT=str(work / "media"), BACKUP_STRUCTURE_CACHE_DIR=str(work / "cache"),
                              BACKUP_TEMP_DIR=str(work / "tmp"), CELERY_BROKER_URL=args.redis, JOB_KEY_PREFIX=prefix,
                              JOB_WAIT_SECONDS="0"):
            _measure(args, work)
    finally:
        import redis

        broker = redis.Redis.from_url(args.redis)
        for key in broker.scan_iter(f"{prefix}*"):  # this run's queue and bindings
            broker.delete(key)
        if args.keep:
            print(f"archivos conservados en {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _measure(args, work: Path) -> None:
    from django.conf import settings

    from backups.jobs.reaper import reap

    [alone] = _prepare(args)
    _backup_measured()
    among = median_seconds(_backup_measured, args.repeat)
    reaper = median_seconds(lambda: reap(), args.repeat)
    page, queries = _page(args)
    backup_each, drill_each, sampled, failed = _night(args, work)
    drills_a_night = args.clinics / settings.BACKUP_DRILL_EVERY_DAYS
    night_hours = (args.clinics * backup_each + drills_a_night * drill_each) / 3600
    print(f"\n{args.clinics:,} clínicas en una base (2 procesos de worker; mediana de {args.repeat}):")
    print(table([
        ("backup de una clínica, sola / entre todas", f"{alone:.3f} / {among:.3f} s", f"{among / alone:.2f}×", "≤ 1,5×"),
        ("una pasada del recolector", f"{reaper:.1f} s", "", "≤ 60 s"),
        (f"página de la plataforma ({queries} consultas)", f"{page:.3f} s", "", "≤ 1 s"),
        (f"noche: backup por clínica (muestra de {sampled})", f"{backup_each:.3f} s", "", ""),
        (f"noche: simulacro por clínica (muestra de {len(range(0, sampled, settings.BACKUP_DRILL_EVERY_DAYS))})",
         f"{drill_each:.3f} s", "", ""),
        (f"noche EXTRAPOLADA: {args.clinics:,} backups + {drills_a_night:,.0f} simulacros", f"{night_hours:.2f} h", "",
         f"≤ {WINDOW_HOURS} h"),
    ], ("medición", "resultado", "relación", "objetivo")))
    if failed:
        print(f"\natención: {failed} trabajos de la muestra no terminaron bien")


if __name__ == "__main__":
    main()
