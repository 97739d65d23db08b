"""Compressed upload bombs against POST /api/restore/ on a real gunicorn worker: peak RSS vs idle, same run.

    DJANGO_SETTINGS_MODULE=core.settings DEBUG=1 .venv/bin/python bench/bench_bombs.py [--rows 2000] [--quick]

The issue 10 uploads, each a .json.gz whose header is a real export of the bench
clinic (so the restore gets as far as its lock and transaction), with one
hostile stretch in the first cita row:

| bomb | compressed | inflated |
| a 300 MiB string | ~0.3 MB | 300 MiB |
| a 1 GiB string | ~1 MB | 1 GiB |
| 10 GiB of whitespace | ~10 MB | 10 GiB |

The server is `gunicorn core.wsgi` with one sync worker, started here against the
configured database. Before each upload the worker's peak-RSS mark is reset
(`/proc/<pid>/clear_refs`, 5) and after the answer its VmHWM is read, so the peak
is the worker's own, exact, for that request alone. The baseline is the same
worker measured in the same run: idle after a warm-up request, and restoring the
clinic's real export (dry run). Target: every bomb's peak under 1.5× idle.
Files are built as concatenated gzip members, so no bomb ever exists inflated here.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, django_setup, ensure_bench_tenant, table  # noqa: E402

MIB = 1024 * 1024
PASSWORD = "clave-bench-bombas-123"
PLACEHOLDER = "__BOMBA__"


@dataclass
class Shot:
    label: str
    compressed: int
    inflated: int
    status: int
    code: str
    seconds: float
    peak_mb: float


def bench_admin(schema_name: str) -> str:
    """An admin of the bench clinic with a known password; its e-mail."""
    from django_tenants.utils import schema_context

    from usuarios.models import Rol, Usuario

    email = f"admin-bombas@{schema_name}.bench"
    with schema_context(schema_name):
        user = Usuario.objects.filter(email=email).first()
        if user is None:
            Usuario.objects.create_user(email, PASSWORD, nombre="Bench", apellido="Bombas", rol=Rol.ADMIN)
    return email


def export_document(schema_name: str) -> bytes:
    from django_tenants.utils import schema_context

    from backup_restore.utils import tenant_data_export_chunks

    with schema_context(schema_name):
        return b"".join(tenant_data_export_chunks(schema_name=schema_name, tenant_name=schema_name))


def write_members(path: Path, parts: list[bytes]) -> int:
    """The parts as one gzip member each, each distinct part compressed once; the file's size."""
    members: dict[int, bytes] = {}
    with open(path, "wb") as out:
        for part in parts:
            if id(part) not in members:
                members[id(part)] = gzip.compress(part, 9)
            out.write(members[id(part)])
    return path.stat().st_size


def build_files(document: bytes, work: Path, *, scale: int) -> dict[str, tuple[Path, int, int]]:
    """label → (file, compressed bytes, inflated bytes); `scale` divides the bombs (1: the issue's sizes)."""
    parsed = json.loads(document)
    cita = next(s for s in parsed["data"] if s["model"] == "clinica.cita")
    cita["rows"][0][cita["fields"].index("motivo")] = PLACEHOLDER
    before, after = json.dumps(parsed).encode().split(json.dumps(PLACEHOLDER).encode())
    x, y, space = b"x" * MIB, b"y" * MIB, b" " * MIB
    bombs = {
        "a 300 MiB string": [before, b'"', *[x] * (300 // scale), b'"', after],
        "a 1 GiB string": [before, b'"', *[y] * (1024 // scale), b'"', after],
        "10 GiB of whitespace": [before, b'""', *[space] * (10240 // scale), after],
    }
    files = {}
    legit = work / "legit.json.gz"
    files["real export (dry run)"] = (legit, write_members(legit, [document]), len(document))
    for index, (label, parts) in enumerate(bombs.items()):
        path = work / f"bomb{index}.json.gz"
        files[label] = (path, write_members(path, parts), sum(len(p) for p in parts))
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pid(master: int, deadline: float) -> int:
    children = Path(f"/proc/{master}/task/{master}/children")
    while time.monotonic() < deadline:
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
        time.sleep(0.05)
    raise SystemExit("gunicorn no arrancó su worker a tiempo")


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS


def _log_in(client, email: str) -> None:
    """Once gunicorn answers: a token for the bench clinic's admin."""
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            response = client.post("/api/auth/token/", json={"email": email, "password": PASSWORD})
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['access']}"


def _upload(client, worker: int, label: str, path: Path, compressed: int, inflated: int) -> Shot:
    """One restore upload, with the worker's peak RSS during it."""
    reset_peak(worker)
    started = time.perf_counter()
    with open(path, "rb") as upload:
        form = {"replace": "true", "dry_run": "true" if label.startswith("real") else "false"}
        response = client.post("/api/restore/", data=form, files={"backup_file": (path.name, upload)})
    seconds = time.perf_counter() - started
    return Shot(label, compressed, inflated, response.status_code, response.json().get("code", "ok"), seconds,
                rss_kb(worker, "VmHWM") / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="size of the bench clinic whose export heads the bombs")
    parser.add_argument("--quick", action="store_true", help="bombs a tenth of the issue's sizes (for iterating)")
    options = parser.parse_args()
    django_setup()
    import httpx
    from django.conf import settings

    schema = f"bench_bombs_{options.rows}"
    ensure_bench_tenant(schema, rows=options.rows)
    email = bench_admin(schema)
    work = Path(tempfile.mkdtemp(prefix="bench_bombs_"))
    files = build_files(export_document(schema), work, scale=10 if options.quick else 1)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "core.wsgi:application", "--workers", "1", "--bind", f"127.0.0.1:{port}",
         "--timeout", "300", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "ALLOWED_HOSTS": "127.0.0.1,localhost", "LOG_LEVEL": "ERROR"},
    )
    try:
        worker = worker_pid(server.pid, time.monotonic() + 30)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=600, headers={"X-Tenant-ID": schema}) as client:
            _log_in(client, email)
            client.get("/api/backups/history/").raise_for_status()  # warm-up: every module the API needs is loaded
            idle_kb = rss_kb(worker, "VmRSS")
            shots = [_upload(client, worker, label, *entry) for label, entry in files.items()]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        for path, _compressed, _inflated in files.values():
            path.unlink(missing_ok=True)
        work.rmdir()

    idle_mb = idle_kb / 1024
    rows = [("worker idle (after a warm-up request)", "", "", "", "", f"{idle_mb:.0f}", "1.00×", "baseline")]
    worst = 0.0
    for shot in shots:
        ratio = shot.peak_mb / idle_mb
        bomb = not shot.label.startswith("real")
        worst = max(worst, ratio) if bomb else worst
        rows.append((shot.label, f"{shot.compressed / 1e6:.2f} MB", f"{shot.inflated / MIB:,.1f} MiB",
                     f"{shot.status} {shot.code}", f"{shot.seconds:.2f}", f"{shot.peak_mb:.0f}", f"{ratio:.2f}×",
                     ("< 1.5× ✓" if ratio < 1.5 else "≥ 1.5× ✗") if bomb else "reference"))
    print(f"gunicorn, 1 worker sync; clínica {schema}; límites: inflado {settings.RESTORE_MAX_INFLATED_BYTES / MIB:,.0f} MiB,"
          f" valor {settings.RESTORE_MAX_VALUE_BYTES / MIB:,.0f} MiB")
    print(table(rows, ("subida", "comprimido", "inflado", "respuesta", "segundos", "RSS pico MB", "vs reposo", "objetivo")))
    if worst >= 1.5:
        sys.exit(1)


if __name__ == "__main__":
    main()
