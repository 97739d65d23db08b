"""Thousands of clinics in one database: one clinic's SQL backup, and the nightly run, as clinics are added.

    python bench/bench_scale.py            # N = 1, 100, 300 (make bench)
    python bench/bench_scale.py --full     # N = 1, 500, 2,000 and the fan-out over all of them

In a scratch database on the project's server (dropped at the end, --keep keeps it):
1. One clinic made for real (migrations) and filled with demo data (clinic_fill at
   --scale): the clinic whose backup is timed.
2. Other clinic schemas are added by replaying that clinic's own `pg_dump --schema` with
   the schema renamed (psql, batches of clinics, two at a time): the same structure and
   rows, no migrations run. They are registered as clinics.
3. At each N, in the same run: the clinic's backup through the service (backup_create,
   in this process, the structure cache warm; median of --repeat) and bare
   `pg_dump --schema | gzip` (median of --repeat); the ratio to N = 1 for each.
4. At the largest N: the nightly run, `create_backup --all-tenants` queued to a real Celery
   worker (`celery -A core worker --concurrency 2`, Redis at --redis, keys under a prefix
   of its own) until every clinic has its backup; against it, a serial
   `pg_dump | gzip` loop timed over --serial-sample clinics and extrapolated to all.
5. Projected hours at 10,000 clinics: the fan-out at its per-clinic cost; the pg_dump loop
   with its per-clinic cost growing with N as measured (a line through the N points).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, clinics_from_dump, measured_clinic, median_seconds, scratch_database, table  # noqa: E402

CLINIC = "bench_escala"
MANAGE = [sys.executable, str(ROOT / "manage.py")]


def _service_backup() -> str:
    from django_tenants.utils import schema_context

    from backups.services import backup_create
    from bitacora.services import AuditContext

    with schema_context(CLINIC):
        backup = backup_create(context=AuditContext.system("bench_scale"))
    assert backup.status == "completed"
    return backup.manifest["dump"]["method"]


def _pg_dump_gzip(binaries, env: dict, schema: str) -> None:
    subprocess.run(f'"{binaries.pg_dump}" --schema={schema} --no-owner --no-privileges | gzip -6 > /dev/null',
                   shell=True, env=env, check=True)


def _fan_out(args, work: Path, clinics: int) -> float:
    """`create_backup --all-tenants` queued to a real worker (2 processes), until every clinic has its backup."""
    import redis
    from django.conf import settings

    from backups.selectors import backup_summary_list

    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, "CELERY_BROKER_URL": args.redis, "JOB_KEY_PREFIX": prefix, "JOB_WAIT_SECONDS": "0",
           "PYTHONUNBUFFERED": "1"}
    log_path = work / "worker.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "core", "worker", "--concurrency=2", "-l", "info",
                                   "--without-heartbeat", "--without-gossip", "--without-mingle", "-n", f"{prefix}@%h"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        while " ready." not in log_path.read_text():  # the worker says so once it consumes
            if worker.poll() is not None:
                raise SystemExit("el worker no arrancó:\n" + log_path.read_text()[-3000:])
            time.sleep(0.1)
        before = {summary.tenant.schema_name: summary.completed_count for summary in backup_summary_list()}
        started = time.perf_counter()
        subprocess.run([*MANAGE, "create_backup", "--all-tenants", "--type", "automatic"], env=env, check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        queue, name = redis.Redis.from_url(args.redis), f"{prefix}{settings.CELERY_TASK_DEFAULT_QUEUE}"
        while queue.llen(name):  # cheap, while jobs wait in the queue; then the summaries, for the last ones
            time.sleep(0.5)
        while True:
            summaries = backup_summary_list()
            done = sum(s.completed_count > before.get(s.tenant.schema_name, 0) or bool(s.last_failure) for s in summaries)
            if done >= len(summaries) and not any(s.in_progress for s in summaries):
                break
            if worker.poll() is not None:
                raise SystemExit("el worker terminó:\n" + log_path.read_text()[-3000:])
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        failed = [s.tenant.schema_name for s in summaries if s.last_failure]
        if failed:
            print(f"  {len(failed)} clínicas fallaron, p. ej. {failed[:3]}")
        return seconds
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        broker = redis.Redis.from_url(args.redis)
        for key in broker.scan_iter(f"{prefix}*"):  # this run's queue and bindings
            broker.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="N = 1, 500, 2000 (si no, 1, 100, 300).")
    parser.add_argument("--clinics", help="Los N, separados por comas (reemplaza --full).")
    parser.add_argument("--scale", type=float, default=0.2, help="Escala de clinic_fill de la clínica medida.")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-fan-out", action="store_true", help="Sin la corrida nocturna con el worker.")
    parser.add_argument("--serial-sample", type=int, default=20, help="Clínicas del bucle serial de pg_dump medidas.")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--keep", action="store_true", help="No borrar la base de datos de prueba.")
    parser.add_argument("--rows", help="(de make bench; no se usa aquí)")
    args = parser.parse_args()
    sizes = [int(n) for n in args.clinics.split(",")] if args.clinics else ([1, 500, 2000] if args.full else [1, 100, 300])

    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        with scratch_database("bench_scale", keep=args.keep, BACKUPS_LOCAL_ROOT=str(work / "backups"),
                              MEDIA_ROOT=str(work / "media"), BACKUP_STRUCTURE_CACHE_DIR=str(work / "cache")):
            _measure(args, sizes, work)
    finally:
        if args.keep:
            print(f"archivos conservados en {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _measure(args, sizes: list[int], work: Path) -> None:
    from backups.dump import reference as dump_reference
    from backups.services import _server_version

    binaries, params, sql = measured_clinic(CLINIC, scale=args.scale)
    env = params.environ()

    results, present = [], 1
    for n in sizes:
        if n > present:
            started = time.perf_counter()
            clinics_from_dump(CLINIC, present, n - 1, sql, binaries, env)
            present = n
            print(f"N = {n:,}: clínicas añadidas en {time.perf_counter() - started:.1f} s", flush=True)
        dump_reference.references_forget()
        shutil.rmtree(work / "cache", ignore_errors=True)
        started = time.perf_counter()
        dump_reference.reference_get(binaries=binaries, params=params, server_version=_server_version())
        build = time.perf_counter() - started
        method = _service_backup()  # warm: the reference is built, and the files phase has its objects
        service = median_seconds(_service_backup, args.repeat)
        bare = median_seconds(lambda: _pg_dump_gzip(binaries, env, CLINIC), args.repeat)
        results.append((n, service, bare, build, method))
        print(f"N = {n:,}: servicio {service:.3f} s ({method}), pg_dump | gzip {bare:.3f} s, referencia {build:.2f} s",
              flush=True)

    first = results[0]
    print("\nUna clínica pequeña, medianas de", args.repeat, "corridas:")
    print(table([(f"{n:,}", f"{service:.3f}", f"{service / first[1]:.2f}", f"{bare:.3f}", f"{bare / first[2]:.2f}",
                  f"{bare / service:.1f}", f"{build:.2f}", method)
                 for n, service, bare, build, method in results],
                ("clínicas", "servicio s", "× N=1", "pg_dump|gzip s", "× N=1", "pg_dump/servicio", "referencia s",
                 "método")))

    _nightly(args, work, results, binaries, env)


def _nightly(args, work: Path, results: list[tuple], binaries, env: dict) -> None:
    """The fan-out over every clinic against a serial pg_dump loop, and the hours projected at 10,000."""
    # pg_dump's cost per clinic grows with N: a least-squares line through the measured points.
    xs, ys = [r[0] for r in results], [r[2] for r in results]
    slope = max(0.0, statistics.covariance(xs, ys) / statistics.variance(xs)) if len(xs) > 1 else 0.0
    intercept = statistics.mean(ys) - slope * statistics.mean(xs)

    def serial_hours(clinics: int) -> float:
        return clinics * (intercept + slope * clinics) / 3600

    if args.no_fan_out:
        print(f"\nProyección a 10.000 clínicas, bucle serial de pg_dump: {serial_hours(10_000):.1f} h")
        return
    from core.selectors import tenant_clinics

    all_clinics = [clinic.schema_name for clinic in tenant_clinics(active_only=True)]
    sample = all_clinics[:: max(1, len(all_clinics) // args.serial_sample)][: args.serial_sample]
    started = time.perf_counter()
    for schema in sample:
        _pg_dump_gzip(binaries, env, schema)
    serial_each = (time.perf_counter() - started) / len(sample)
    serial = serial_each * len(all_clinics)
    fan_out = _fan_out(args, work, len(all_clinics))
    print(f"\nCorrida nocturna, {len(all_clinics):,} clínicas:")
    print(table([
        ("fan-out: create_backup --all-tenants, worker de 2 procesos", f"{fan_out:.0f}", f"{fan_out / len(all_clinics):.3f}", "1.0"),
        (f"bucle serial pg_dump | gzip (medido en {len(sample)}, EXTRAPOLADO)", f"{serial:.0f}", f"{serial_each:.3f}",
         f"{serial / fan_out:.1f}"),
    ], ("corrida", "segundos", "s por clínica", "× fan-out")))
    per_clinic = fan_out / len(all_clinics)
    print(f"\nProyección a 10.000 clínicas: fan-out {10_000 * per_clinic / 3600:.1f} h; "
          f"bucle serial de pg_dump {serial_hours(10_000):.1f} h (su costo por clínica crece con N)")


if __name__ == "__main__":
    main()
