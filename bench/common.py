"""Shared pieces of the benchmarks: Django set-up, a bench clinic of a given size,
running a command as a child process to read its wall time and peak RSS, and
repeated measures (sides alternated, medians with their spread)."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
os.environ.setdefault("DEBUG", "1")


def server_settings() -> dict:
    """How to reach the PostgreSQL server the project uses (DATABASE_URL, else the embedded one),
    for benchmarks that make a scratch database of their own on it."""
    import environ

    if os.environ.get("DATABASE_URL"):
        return environ.Env.db_url_config(os.environ["DATABASE_URL"])
    from core import embedded_pg

    state = embedded_pg.read_state()
    if state is None:
        raise SystemExit("DATABASE_URL no está definido y el PostgreSQL embebido no está iniciado (make db).")
    return {"HOST": state["host"], "PORT": state["port"], "USER": state["user"], "PASSWORD": ""}


def admin_sql(server: dict, statement: str) -> None:
    """One statement on the server's maintenance database (CREATE or DROP DATABASE)."""
    import psycopg2

    raw = psycopg2.connect(dbname="postgres", host=server["HOST"] or None, port=server["PORT"] or None,
                           user=server["USER"] or None, password=server["PASSWORD"] or None)
    raw.autocommit = True
    try:
        with raw.cursor() as cursor:
            cursor.execute(statement)
    finally:
        raw.close()


@contextmanager
def scratch_database(prefix: str, *, keep: bool = False, **environ: str) -> Iterator[str]:
    """A new database on the project's server, with Django set up on it (DATABASE_URL and
    the given environment), dropped at the end unless keep."""
    from core.testing import postgres_url

    server = server_settings()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin_sql(server, f'CREATE DATABASE "{name}"')
    os.environ.update(DATABASE_URL=postgres_url(server, name), **environ)
    try:
        django_setup()
        yield name
    finally:
        from django.db import connections

        connections.close_all()
        if keep:
            print(f"base de datos conservada: {name}")
        else:
            admin_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def django_setup() -> None:
    import django

    django.setup()


@dataclass
class Measured:
    label: str
    seconds: float
    peak_rss_mb: float
    # The operation's own time as its record tells it (None: no record says it).
    inside: float | None = None
    # User + system CPU of the processes the command waited for (the server's not counted): on a
    # shared machine it moves far less than the wall time, so it shows the client side's cost.
    cpu_seconds: float = 0.0


def measure(label: str, command: list[str] | str, *, env: dict | None = None) -> Measured:
    """Run a command in its own process (a shell pipeline when given a string) and report
    wall time, and the largest peak RSS and the CPU time of the processes it waited for."""
    wrapper = [
        sys.executable, "-c",
        "import resource, subprocess, sys, json;"
        "cmd = json.loads(sys.argv[1]);"
        "rc = subprocess.call(cmd, shell=isinstance(cmd, str));"
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime, file=sys.stderr);"
        "sys.exit(rc)",
        __import__("json").dumps(command),
    ]
    started = time.perf_counter()
    result = subprocess.run(wrapper, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{label} falló:\n{result.stderr[-3000:]}")
    peak_kb, cpu = result.stderr.strip().splitlines()[-1].split()
    return Measured(label, seconds, int(peak_kb) / 1024, cpu_seconds=float(cpu))


def ensure_bench_tenant(schema_name: str, *, rows: int, log=print):
    """A clinic holding about `rows` rows of demo data (created once, reused after)."""
    from django_tenants.utils import schema_context

    from clinica.demo import DemoCounts, clinic_fill
    from clinica.models import Paciente
    from core.services import tenant_ensure, tenant_slug

    scale = rows / DemoCounts.for_scale(1).total
    tenant, _ = tenant_ensure(schema_name=schema_name, slug=tenant_slug(schema_name), nombre=f"Bench {schema_name}", domains=[])
    with schema_context(schema_name):
        if not Paciente.objects.exists():
            log(f"llenando {schema_name} con ~{rows:,} filas (escala {scale:.1f})…")
            started = time.perf_counter()
            clinic_fill(scale=scale)
            log(f"  {time.perf_counter() - started:.1f} s")
    return tenant


def table(rows: list[tuple], headers: tuple) -> str:
    widths = [max(len(str(value)) for value in column) for column in zip(headers, *rows)]
    lines = ["  ".join(str(value).ljust(width) for value, width in zip(headers, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(value).ljust(width) for value, width in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    """The median wall time of `repeat` calls of run, in this process."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def alternated(sides: Sequence[Callable[[], Measured]], repeat: int) -> list[list[Measured]]:
    """Each side measured `repeat` times, taking turns (a, b, a, b…): a load that comes and goes
    on a shared machine falls on both sides alike instead of on whichever ran during it.
    One list of measures per side, in the order given."""
    results: list[list[Measured]] = [[] for _ in sides]
    for _ in range(repeat):
        for index, side in enumerate(sides):
            results[index].append(side())
    return results


def spread(values: Sequence[float], digits: int = 2) -> str:
    """The median and, when there are several, the range: `4.15 (4.02–4.40)`."""
    middle = f"{statistics.median(values):.{digits}f}"
    if len(values) < 2:
        return middle
    return f"{middle} ({min(values):.{digits}f}–{max(values):.{digits}f})"


@dataclass
class Repeated:
    """The measures of one side: medians, spreads, and the ratio of medians to another side."""

    runs: list[Measured]

    @property
    def label(self) -> str:
        return self.runs[0].label

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def peak_rss_mb(self) -> float:
        return max(run.peak_rss_mb for run in self.runs)

    def wall(self) -> str:
        return spread([run.seconds for run in self.runs])

    def cpu(self) -> str:
        return spread([run.cpu_seconds for run in self.runs])

    def inside(self) -> str:
        inside = [run.inside for run in self.runs if run.inside is not None]
        return spread(inside) if inside else "-"

    def ratio(self, baseline: "Repeated") -> str:
        return f"{self.seconds / baseline.seconds:.2f}"


# Every table of a template clinic cloned into each new schema (structure, and the rows of
# the tables named in COPY_TABLES), FIRST..LAST in one transaction: each new table holds
# locks until its commit, so batches keep the lock table small.
CLONE_SQL = r"""
DO $$
DECLARE s text; t text;
BEGIN
  FOR i IN FIRST..LAST LOOP
    s := 'PREFIX' || lpad(i::text, 5, '0');
    EXECUTE format('CREATE SCHEMA %I', s);
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'TEMPLATE' LOOP
      EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL)', s, t, 'TEMPLATE', t);
      IF t = ANY(COPY_TABLES) THEN
        EXECUTE format('INSERT INTO %I.%I SELECT * FROM %I.%I', s, t, 'TEMPLATE', t);
      END IF;
    END LOOP;
  END LOOP;
END $$;
"""
CLONE_BATCH = 20


def clone_clinics(*, template: str, prefix: str, count: int, copy_tables: tuple[str, ...] = (), extra_sql: str = "") -> list[str]:
    """`count` clinic schemas cloned in SQL from a template clinic's (no migrations run), registered
    as clinics. `extra_sql` runs after each batch, with FIRST, LAST and PREFIX replaced."""
    from django.db import connection, transaction

    from core.models import Tenant

    tables = "ARRAY[" + ",".join(f"'{t}'" for t in copy_tables) + "]::text[]" if copy_tables else "ARRAY[]::text[]"
    for first in range(1, count + 1, CLONE_BATCH):
        last = min(first + CLONE_BATCH - 1, count)
        statement = CLONE_SQL + extra_sql
        for key, value in (("FIRST", str(first)), ("LAST", str(last)), ("TEMPLATE", template), ("PREFIX", prefix),
                           ("COPY_TABLES", tables)):
            statement = statement.replace(key, value)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    names = [f"{prefix}{i:05d}" for i in range(1, count + 1)]
    Tenant.objects.bulk_create(
        [Tenant(schema_name=name, slug=name.replace("_", "-"), nombre=f"Clínica bench {name}") for name in names],
        batch_size=1000,
    )
    return names


def measured_clinic(clinic: str, *, scale: float):
    """In a scratch database (scratch_database): the shared schema migrated, and one clinic made for
    real (migrations) and filled with demo data at `scale`. Returns the pg binaries, the connection
    parameters and the clinic's own dump (clinic_sql), taken before any backup of it: the names in
    its audit log would not rename safely."""
    from django.core.management import call_command
    from django_tenants.utils import schema_context

    from backups.services import database_params, pg_binaries
    from clinica.demo import clinic_fill
    from core.models import Tenant
    from core.services import public_tenant_ensure

    started = time.perf_counter()
    call_command("migrate_schemas", "--shared", "--noinput", verbosity=0)
    public_tenant_ensure(domains=["localhost"])
    Tenant(schema_name=clinic, slug=clinic.replace("_", "-"), nombre="Clínica medida").save(verbosity=0)
    with schema_context(clinic):
        counts = clinic_fill(scale=scale)
    binaries, params = pg_binaries(), database_params()
    sql = clinic_sql(clinic, binaries, params.environ())
    print(f"clínica medida: {counts.total:,} filas; preparada en {time.perf_counter() - started:.1f} s", flush=True)
    return binaries, params, sql


# Clinics cloned by replaying one clinic's dump under new names: the structure is exactly the
# clinic's (foreign keys included), as migrations would have made it; two psql at a time.
DUMP_CLONE_BATCH = 50


def clinic_sql(clinic: str, binaries, env: dict) -> str:
    """One clinic's pg_dump, checked to name the clinic only as a schema qualifier (safe to rename)."""
    done = subprocess.run([str(binaries.pg_dump), f"--schema={clinic}", "--no-owner", "--no-privileges"],
                          env=env, capture_output=True, check=True)
    sql = done.stdout.decode()
    assert sql.count(clinic) == sql.count(f"{clinic}.") + sql.count(f"{clinic};") + sql.count(f"{clinic}/"), "unsafe rename"
    return sql


def clinics_from_dump(clinic: str, first: int, last: int, sql: str, binaries, env: dict, prefix: str = "bench_c") -> None:
    """Clinics first..last: the measured clinic's dump replayed under each new name, two psql at a time."""
    from core.models import Tenant

    batches = [range(start, min(start + DUMP_CLONE_BATCH, last + 1)) for start in range(first, last + 1, DUMP_CLONE_BATCH)]
    running: list[subprocess.Popen] = []
    for batch in batches:
        script = "".join(sql.replace(clinic, f"{prefix}{i:05d}") for i in batch).encode()
        process = subprocess.Popen([str(binaries.psql), "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"],
                                   stdin=subprocess.PIPE, env=env, stderr=subprocess.PIPE)
        process.stdin.write(script)
        process.stdin.close()
        running.append(process)
        while len(running) >= 2 or (running and batch is batches[-1]):
            done = running.pop(0)
            if done.wait() != 0:
                raise SystemExit(done.stderr.read().decode()[-2000:])
    Tenant.objects.bulk_create(
        [Tenant(schema_name=f"{prefix}{i:05d}", slug=f"{prefix}{i:05d}".replace("_", "-"), nombre=f"Clínica {i:05d}")
         for i in range(first, last + 1)],
        batch_size=1000,
    )
