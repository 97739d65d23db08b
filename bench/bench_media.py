"""Backups of a clinic whose patient files are in Supabase Storage (SUPABASE_MEDIA_BUCKET), against
the local server that speaks its protocol (backups/tests/supabase_server.py), same run.

    python bench/bench_media.py              # 300 radiographs of 200 KB to 5 MB (make bench)
    python bench/bench_media.py --full       # 2,000 radiographs (about 5 GB)

A clinic of demo rows gets N radiographs whose files are objects of random bytes in the
server's media bucket (none on any disk of the service). Then, each as a child process
(Django start-up included) timed with its peak RSS, in alternated rounds (the best of each). The
page cache is left as it is: the objects' disk is the storage server's business, not the
service's, and both sides read the same objects from the same server:
- the bare tools: `pg_dump --schema | gzip`, and every object read once through the
  protocol (a signed URL, then its GET) with BACKUP_FILE_WORKERS threads (read_objects.py);
  and the same read with each object also hashed and written to a folder, the least work a
  backup does with a file (the other reference, as `tar` is for bench_files);
- the first backup (`manage.py create_backup`) into an empty backups folder on the local
  disk (bench/media_settings.py): dump, every object read once while hashed, stored once;
- a second backup with nothing changed: its file phase only asks each object's info.
Targets (issue 19): first ≤ 1.3× the bare tools; second's file phase < 10% of the first's.
The server counts the downloads: each object exactly once in a first backup, none in a second.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_files import latest_backup  # noqa: E402
from common import ROOT, Measured, django_setup, ensure_bench_tenant, measure, table  # noqa: E402

MEDIA_BUCKET = "clinica-media"
BENCH_LABEL = "bench-media"


def ensure_radiographs(server, schema: str, count: int, max_size: int, seed: int = 19) -> tuple[list[str], int]:
    """`count` radiographs in the clinic, each naming its own object of random bytes; the names, the bytes."""
    from django_tenants.utils import schema_context

    from clinica.models import Paciente, Radiografia

    rng = random.Random(f"{seed}:{schema}")
    names = [f"{schema}/radiografias/bench_{index:05d}.bin" for index in range(count)]
    total = 0
    for name in names:
        size = rng.randint(min(200 * 1024, max_size), max_size)
        server.put(MEDIA_BUCKET, name, os.urandom(size), content_type="application/octet-stream")
        total += size
    with schema_context(schema):
        paciente = Paciente.objects.order_by("pk").first()
        existing = set(Radiografia.objects.filter(descripcion=BENCH_LABEL).values_list("archivo", flat=True))
        Radiografia.objects.bulk_create([Radiografia(paciente=paciente, archivo=name, descripcion=BENCH_LABEL,
                                                     tomada_en=date.today()) for name in names if name not in existing])
    return names, total


def downloads_since(server, before: int) -> Counter:
    return Counter(download.name for download in server.downloads[before:])


def first_rounds(server, schema: str, names_file: Path, work: Path, pg_dump: str, env: dict, child: dict,
                 rounds: int) -> tuple[list[Measured], Measured, float]:
    """The bare tools (the dump, the read, the read with hash and write) and the first backup (into an
    empty folder), alternated: the best of each, and the shortest file phase of the first backups."""
    from django.conf import settings

    dumps, reads, stores, firsts, file_phases = [], [], [], [], []
    read = [sys.executable, str(ROOT / "bench" / "read_objects.py"), server.url, server.key, MEDIA_BUCKET,
            str(settings.BACKUP_FILE_WORKERS), str(names_file)]
    for round_number in range(rounds):
        dumps.append(measure("pg_dump | gzip", f'"{pg_dump}" --schema={schema} --no-owner --no-privileges '
                                               f'| gzip -6 > "{work}/dump.sql.gz"', env=env))
        reads.append(measure(f"leer cada objeto una vez ({settings.BACKUP_FILE_WORKERS} hilos)", read))
        (work / "stored").mkdir()
        stores.append(measure("leer, hashear y escribir cada objeto una vez", [*read, str(work / "stored")]))
        shutil.rmtree(work / "stored")
        before = len(server.downloads)
        firsts.append(measure("create_backup, primero", [sys.executable, str(ROOT / "manage.py"), "create_backup",
                                                         "--tenant", schema],
                              env={**child, "BACKUPS_LOCAL_ROOT": str(work / f"backups-{round_number}")}))
        file_phases.append(latest_backup(schema).manifest["seconds"]["files"])
        read_counts = Counter(downloads_since(server, before).values())
        print(f"ronda {round_number + 1}: objetos descargados por el backup, por número de veces: {dict(read_counts)}",
              flush=True)
        if round_number < rounds - 1:
            shutil.rmtree(work / f"backups-{round_number}")
    for label, measured in (("lectura", reads), ("lectura, hash y escritura", stores), ("primero", firsts)):
        print(f"rondas, {label}: {' / '.join(f'{one.seconds:.2f} s' for one in measured)}", flush=True)

    def best(measured: list[Measured]) -> Measured:
        return min(measured, key=lambda one: one.seconds)

    return [best(dumps), best(reads), best(stores)], best(firsts), min(file_phases)


def report(files: int, total: int, bare: list[Measured], first: Measured, first_files: float, second: Measured,
           schema: str, second_downloads: int, rounds: int) -> None:
    from django.conf import settings

    second_record = latest_backup(schema)
    dump, read, stored = bare
    bare_seconds, floor_seconds = dump.seconds + read.seconds, dump.seconds + stored.seconds
    second_files = second_record.manifest["seconds"]["files"]
    rows = [("herramientas", measured.label, f"{measured.seconds:.2f}", "", "", f"{measured.peak_rss_mb:.0f}")
            for measured in bare]
    rows.append(("herramientas", "pg_dump | gzip + leer los objetos", f"{bare_seconds:.2f}", "1.00", "", ""))
    rows.append(("herramientas", "pg_dump | gzip + leer, hashear y escribir", f"{floor_seconds:.2f}", "", "1.00", ""))
    rows += [("servicio", measured.label, f"{measured.seconds:.2f}", f"{measured.seconds / bare_seconds:.2f}",
              f"{measured.seconds / floor_seconds:.2f}", f"{measured.peak_rss_mb:.0f}") for measured in (first, second)]
    print(f"\n{files:,} radiografías en Supabase Storage (servidor local del protocolo), {total / 1e9:.2f} GB; "
          f"backups en disco; {settings.BACKUP_FILE_WORKERS} hilos en {os.cpu_count()} núcleos; mejor de {rounds} rondas")
    print(table(rows, ("quién", "qué", "segundos", "× leer", "× leer, hash, escribir", "RSS pico MB")))
    print(f"\nfase de archivos del primero (la mejor): {first_files:.2f} s = {first_files / read.seconds:.2f}× "
          f"leer los objetos, {first_files / stored.seconds:.2f}× leerlos, hashearlos y escribirlos")
    print(f"fase de archivos del segundo: {second_files:.2f} s ({second_record.manifest['files']['uploaded']} subidos, "
          f"{second_downloads} descargas) = {100 * second_files / first_files:.1f}% del primero (objetivo < 10%)")
    print(f"objetivo primero ≤ 1.3× herramientas: {first.seconds / bare_seconds:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300, help="radiographs in the clinic (default 300)")
    parser.add_argument("--full", action="store_true", help="the size of bench_files --full: 2,000 radiographs")
    parser.add_argument("--max-size", type=int, default=5 * 1024 * 1024, help="largest file, bytes (default 5 MiB)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds of the bare tools and the first backup")
    parser.add_argument("--rows", type=int, default=5000, help="demo rows besides the radiographs (make bench passes ROWS)")
    options = parser.parse_args()
    files = 2000 if options.full else options.files
    django_setup()

    from backups.services import database_params, pg_binaries
    from backups.tests.supabase_server import FakeSupabaseStorage

    binaries, env = pg_binaries(), database_params().environ()
    schema = f"bench_media_{files}"
    ensure_bench_tenant(schema, rows=min(options.rows, 20000))
    work = Path(tempfile.mkdtemp(prefix="bench_media_", dir=ROOT / "var"))
    server = FakeSupabaseStorage(work / "supabase").start()
    try:
        server.create_bucket(MEDIA_BUCKET)
        names, total = ensure_radiographs(server, schema, files, options.max_size)
        names_file = work / "names.txt"
        names_file.write_text("\n".join(names) + "\n", encoding="utf-8")
        print(f"{schema}: {len(names):,} radiografías, {total / 1e9:.2f} GB en el bucket {MEDIA_BUCKET}", flush=True)
        child = {"DJANGO_SETTINGS_MODULE": "bench.media_settings", "SUPABASE_URL": server.url,
                 "SUPABASE_KEY": server.key, "SUPABASE_MEDIA_BUCKET": MEDIA_BUCKET}
        bare, first, first_files = first_rounds(server, schema, names_file, work, binaries.pg_dump, env, child, options.rounds)
        before = len(server.downloads)
        second = measure("create_backup, segundo sin cambios", [sys.executable, str(ROOT / "manage.py"), "create_backup",
                                                               "--tenant", schema],
                         env={**child, "BACKUPS_LOCAL_ROOT": str(work / f"backups-{options.rounds - 1}")})
        report(len(names), total, bare, first, first_files, second, schema, len(server.downloads) - before, options.rounds)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
