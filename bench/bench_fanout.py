"""The nightly fan-out: every clinic's backup as a Celery job, 1 and 2 worker processes,
against a plain serial loop of `pg_dump --schema=X | gzip` over the same clinics.

    python bench/bench_fanout.py --clinics 200 --crowd 500   # make bench runs 50 and 200

In a scratch database: one small clinic is created for real (migrations, demo rows) and
its dump replayed under --clinics new names (same structure and rows). Then, in the same run:
- the serial bare-tool loop over all of them (the baseline);
- `create_backup --all-tenants --type automatic` with a broker (it only enqueues) and a
  real `celery -A core worker --concurrency=W` draining the queue, for W = 1 and 2:
  clinics per hour and the ratio to the baseline;
- one small clinic's backup (service and bare pg_dump) in a database holding only it,
  and again among --crowd clinic schemas: pg_dump reads the whole catalog.
Redis must answer at --redis (127.0.0.1:6379 by default); keys get a prefix of their own.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, clinic_sql, clinics_from_dump, clone_clinics, measure, scratch_database, table  # noqa: E402

TEMPLATE = "bench_fan"
PREFIX = "bench_f"
def _manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def _completed_backups() -> int:
    from backups.selectors import backup_summary_list

    return sum(summary.completed_count for summary in backup_summary_list())


def _worker(concurrency: int, env: dict) -> subprocess.Popen:
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-worker-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "core", "worker", f"--concurrency={concurrency}", "-l", "info",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-n", f"bench{uuid.uuid4().hex[:6]}@%h"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    process.log_path = log.name
    while " ready." not in Path(log.name).read_text():  # the clock starts with a worker ready to consume
        if process.poll() is not None:
            raise SystemExit(f"el worker no arrancó: {Path(log.name).read_text()[-3000:]}")
        time.sleep(0.1)
    return process


def _fan_out(workers: int, clinics: int, env: dict) -> tuple[float, float]:
    """Seconds to enqueue every clinic's backup, and seconds until the workers finished them all."""
    done_before = _completed_backups()
    worker = _worker(workers, env)
    try:
        started = time.perf_counter()
        subprocess.run(_manage("create_backup", "--all-tenants", "--type", "automatic"), env=env, check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        enqueued = time.perf_counter() - started
        while _completed_backups() - done_before < clinics:
            if worker.poll() is not None:
                raise SystemExit(f"el worker terminó: {Path(worker.log_path).read_text()[-3000:]}")
            time.sleep(0.2)
        return enqueued, time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        Path(worker.log_path).unlink(missing_ok=True)


def _forget_keys(redis_url: str, prefix: str) -> None:
    """This run's queue and bindings: Redis outlives the benchmark."""
    import redis

    broker = redis.Redis.from_url(redis_url)
    for key in broker.scan_iter(f"{prefix}*"):
        broker.delete(key)
    broker.close()


def _one_clinic(binaries, env: dict, label: str) -> list[tuple]:
    bare = measure(f"pg_dump | gzip, {label}",
                   f'"{binaries.pg_dump}" --schema={TEMPLATE} --no-owner --no-privileges | gzip -6 > /dev/null', env=env)
    service = measure(f"create_backup, {label}", _manage("create_backup", "--tenant", TEMPLATE))
    return [bare, service]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clinics", type=int, default=50, help="Clínicas del fan-out (el issue mide 200).")
    parser.add_argument("--crowd", type=int, default=200, help="Esquemas de clínica para medir un backup entre muchos (el issue: 500).")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--rows", help="(de make bench; no se usa aquí)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as folder, scratch_database("bench_fanout", keep=args.keep):
        os.environ["BACKUPS_LOCAL_ROOT"] = str(Path(folder) / "backups")
        os.environ["MEDIA_ROOT"] = str(Path(folder) / "media")
        _measure(args)


def _measure(args) -> None:
    from django.core.management import call_command

    from backups.services import database_params, pg_binaries
    from clinica.demo import clinic_fill
    from core.models import Tenant
    from core.services import public_tenant_ensure
    from django_tenants.utils import schema_context

    call_command("migrate_schemas", "--shared", "--noinput", verbosity=0)
    public_tenant_ensure(domains=["localhost"])
    Tenant(schema_name=TEMPLATE, slug="bench-fan", nombre="Plantilla").save(verbosity=0)
    with schema_context(TEMPLATE):
        counts = clinic_fill(scale=0.05)
    binaries = pg_binaries()
    env = {**os.environ, **database_params().environ()}
    sql = clinic_sql(TEMPLATE, binaries, env)  # before its own backups write its name into rows
    alone = _one_clinic(binaries, env, "sola en la base")

    started = time.perf_counter()
    # Replayed from the clinic's own dump: the same structure as migrations make (foreign keys
    # included), so each backup takes the cached-structure path as a real clinic's does.
    clinics_from_dump(TEMPLATE, 1, args.clinics, sql, binaries, env, prefix=PREFIX)
    names = [f"{PREFIX}{i:05d}" for i in range(1, args.clinics + 1)]
    print(f"{args.clinics} clínicas de {counts.total} filas clonadas en {time.perf_counter() - started:.1f} s", flush=True)

    loop = " ; ".join(f'"{binaries.pg_dump}" --schema={name} --no-owner --no-privileges | gzip -6 > /dev/null' for name in names)
    serial = measure(f"bucle serial pg_dump | gzip ({args.clinics})", loop, env=env)
    worker_env = {**os.environ, "CELERY_BROKER_URL": args.redis, "JOB_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:"}
    try:
        runs = [(workers, *_fan_out(workers, args.clinics, worker_env)) for workers in (1, 2)]
    finally:
        _forget_keys(args.redis, worker_env["JOB_KEY_PREFIX"])

    crowd = max(args.crowd - args.clinics - 1, 0)
    clone_clinics(template=TEMPLATE, prefix="bench_g", count=crowd)
    among = _one_clinic(binaries, env, f"entre {args.clinics + crowd + 1} clínicas")

    per_hour = lambda seconds: args.clinics * 3600 / seconds  # noqa: E731
    rows = [(serial.label, f"{serial.seconds:.1f}", "-", f"{per_hour(serial.seconds):,.0f}", "1.00")]
    for workers, enqueued, seconds in runs:
        rows.append((f"fan-out, {workers} worker(s)", f"{seconds:.1f}", f"{enqueued:.1f}", f"{per_hour(seconds):,.0f}",
                     f"{serial.seconds / seconds:.2f}"))
    print(f"\nFan-out nocturno sobre {args.clinics} clínicas pequeñas ({counts.total} filas cada una)")
    print(table(rows, ("qué", "segundos", "encolar (s)", "clínicas/hora", "× más rápido que el bucle")))
    print(f"\nUna clínica pequeña, {alone[0].label.split(', ')[1]} y {among[0].label.split(', ')[1]}")
    print(table([(m.label, f"{m.seconds:.2f}", f"{m.peak_rss_mb:.0f}") for m in alone + among],
                ("qué", "segundos", "RSS pico MB")))
    print(f"\npg_dump entre {args.clinics + crowd + 1} clínicas / sola: {among[0].seconds / alone[0].seconds:.2f}×; "
          f"servicio: {among[1].seconds / alone[1].seconds:.2f}×")


if __name__ == "__main__":
    main()
