"""How long a command takes to start (issue 22): `manage.py check`, `help`, a command's `--help`
and a real command, against bare Python and `import django` measured in the same run.

    python bench/bench_startup.py               # 5 rounds
    python bench/bench_startup.py --repeat 9

Each round runs every line once, in the same order, so that a burst of load on a shared
machine touches all of them; a line's figure is its median wall time with the spread
(min–max) of its rounds, and its median CPU time (user + system), which other processes on
the machine disturb less. The ratio is the median against `import django`'s. The modules
column counts what the command imports (one more run under `python -X importtime`): it does
not depend on the machine, and a heavy library loaded again at start shows there first.
Before the rounds the project's bytecode is compiled, as render.yaml's build does: where
PYTHONDONTWRITEBYTECODE is set (as in some shells and CI), nothing else writes it, and every
process would compile the project's ~120 modules again (~60 ms on a 2-core machine).
Target: `manage.py check` ≤ 0.5 s. The real command reads the project's database (make migrate).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from common import ROOT, table

MANAGE = [sys.executable, str(ROOT / "manage.py")]
LINES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import django'": [sys.executable, "-c", "import django"],
    "manage.py help": [*MANAGE, "help"],
    "manage.py create_backup --help": [*MANAGE, "create_backup", "--help"],
    "manage.py check": [*MANAGE, "check"],
    "manage.py backup_status --all-tenants": [*MANAGE, "backup_status", "--all-tenants"],
}
BASELINE = "python -c 'import django'"
APPS = ("core", "usuarios", "bitacora", "clinica", "backups", "backup_restore", "alertas")  # render.yaml's compileall
TARGET = ("manage.py check", 0.5)


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of the command in its own process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    error = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} falló:\n{error[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def modules_imported(command: list[str]) -> int:
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=ROOT, capture_output=True, text=True)
    return sum(line.startswith("import time:") for line in done.stderr.splitlines()) - 1  # less its header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", help="ignored (bench/run.py passes it to every bench)")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {label: [] for label in LINES}
    cpus: dict[str, list[float]] = {label: [] for label in LINES}
    subprocess.run([sys.executable, "-m", "compileall", "-q", *APPS], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print("bytecode del proyecto compilado (como el build de render.yaml)"
          + (", PYTHONDONTWRITEBYTECODE definido" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""), flush=True)
    for label, command in LINES.items():
        run_once(command)  # warm: files in the page cache
    for round_number in range(args.repeat):
        for label, command in LINES.items():
            wall, cpu = run_once(command)
            walls[label].append(wall)
            cpus[label].append(cpu)
        print(f"ronda {round_number + 1}/{args.repeat}", flush=True)
    baseline = statistics.median(walls[BASELINE])
    rows = []
    for label, command in LINES.items():
        median = statistics.median(walls[label])
        rows.append((label, f"{median:.3f} s", f"{min(walls[label]):.3f}–{max(walls[label]):.3f}",
                     f"{statistics.median(cpus[label]):.3f} s", f"{median / baseline:.2f}×", modules_imported(command)))
    print(table(rows, ("", "mediana", "rango", "CPU (mediana)", f"× {BASELINE}", "módulos")))
    label, limit = TARGET
    median = statistics.median(walls[label])
    cpu = statistics.median(cpus[label])
    # On a loaded machine the wall time waits for a core: the CPU time says what the command costs.
    print(f"\n{label}: {median:.3f} s, CPU {cpu:.3f} s (objetivo ≤ {limit} s) {'ok' if median <= limit else 'POR ENCIMA'}")


if __name__ == "__main__":
    main()
