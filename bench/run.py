"""`make bench`: every benchmark in bench/, each printing ratios against the bare tools
measured in the same run. ROWS=1000000 make bench for the million-row figures."""
import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
rows = os.environ.get("ROWS", "100000")
failed = 0
for script in sorted(BENCH_DIR.glob("bench_*.py")):
    print(f"\n=== {script.name} (--rows {rows}) ===", flush=True)
    failed += subprocess.call([sys.executable, str(script), "--rows", rows, *sys.argv[1:]]) != 0
sys.exit(1 if failed else 0)
