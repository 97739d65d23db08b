"""Backups with patient files vs `pg_dump | gzip` plus `tar` of the clinic's media folder, same run.

    python bench/bench_files.py              # 100 radiographs (make bench)
    python bench/bench_files.py --full       # 2,000 radiographs of 200 KB to 5 MB (about 5 GB)

A clinic of demo rows gets N radiographs, each its own file of random (incompressible)
bytes between 200 KB and 5 MB. Then, each as a child process (Django start-up
included) timed with its peak RSS:
- the bare tools: `pg_dump --schema | gzip` and `tar` of the clinic's media folder;
- the first backup (`manage.py create_backup`: dump, file list from its snapshot,
  every file hashed and stored once) into an empty backups folder;
- a second backup with nothing changed (its file phase only looks at sizes and times);
- a first backup of a clinic with a tenth of the files, for the RSS;
- with the clinic's media folder moved aside (the media storage lost), `tar -xf` of
  the bare tools' tar against `manage.py restore_backup` of the first backup (which
  writes every file), with the file threads and with one; the folder is put back.
Targets (issue 11): first ≤ 1.3× the bare tools; second's file phase < 10% of the
first's; RSS flat in the number and size of the files.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Measured, django_setup, ensure_bench_tenant, measure, table  # noqa: E402

MIN_SIZE, MAX_SIZE = 200 * 1024, 5 * 1024 * 1024
BENCH_LABEL = "bench-files"


def ensure_radiographs(schema: str, count: int, seed: int = 11) -> int:
    """`count` radiographs in the clinic, each with its own file of random bytes; their total size."""
    from django.core.files.storage import storages
    from django_tenants.utils import schema_context

    from clinica.models import Paciente, Radiografia

    media = storages["default"]
    rng = random.Random(f"{seed}:{schema}")
    sizes = [rng.randint(MIN_SIZE, MAX_SIZE) for _ in range(count)]
    with schema_context(schema):
        paciente = Paciente.objects.order_by("pk").first()
        existing = set(Radiografia.objects.filter(descripcion=BENCH_LABEL).values_list("archivo", flat=True))
        rows = []
        for index, size in enumerate(sizes):
            name = f"{schema}/radiografias/bench_{index:05d}.bin"
            if not media.exists(name) or media.size(name) != size:
                path = Path(media.path(name))  # the local media folder, as `tar` sees it
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(os.urandom(size))
            if name not in existing:
                rows.append(Radiografia(paciente=paciente, archivo=name, descripcion=BENCH_LABEL, tomada_en=date.today()))
        Radiografia.objects.bulk_create(rows)
    return sum(sizes)


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def page_cache_droppable() -> bool:
    """Whether this process may empty the kernel's page cache (root, and /proc writable)."""
    try:
        with open(DROP_CACHES, "w") as control:
            control.write("1")
        return True
    except OSError:
        return False


def settled(label: str, command: list[str] | str, *, env: dict | None = None) -> Measured:
    """measure() from the same start every time: what earlier steps wrote is on disk (sync),
    and, where this process may, the page cache is emptied, so each run reads its files
    from disk as a nightly backup does. Without that, the time to write 5 GB here varied
    from 5.6 s to 28 s with whatever the step before had left in memory."""
    subprocess.run(["sync"], check=True)
    page_cache_droppable()
    return measure(label, command, env=env)


def bare_and_first(schema: str, work: Path, pg_dump: str, env: dict, media_root: Path, rounds: int) -> tuple[list[Measured], Measured]:
    """The bare tools and the first backup (into an empty folder), alternated; the best of each over the rounds."""
    dumps, tars, firsts = [], [], []
    for round_number in range(rounds):
        dumps.append(settled("pg_dump | gzip", f'"{pg_dump}" --schema={schema} --no-owner --no-privileges | gzip -6 > "{work}/dump.sql.gz"',
                             env=env))
        tars.append(settled("tar (carpeta de la clínica)", ["tar", "-cf", str(work / "media.tar"), "-C", str(media_root), schema]))
        if round_number < rounds - 1:
            (work / "media.tar").unlink()  # the last one is kept: the restores are measured against extracting it
        firsts.append(settled("create_backup, primero", [sys.executable, str(ROOT / "manage.py"), "create_backup", "--tenant", schema],
                              env={"BACKUPS_LOCAL_ROOT": str(work / f"backups-{round_number}")}))
        if round_number < rounds - 1:
            shutil.rmtree(work / f"backups-{round_number}")

    def best(measured: list[Measured]) -> Measured:
        return min(measured, key=lambda one: one.seconds)

    for label, measured in (("tar", tars), ("primero", firsts)):
        print(f"rondas, {label}: {' / '.join(f'{one.seconds:.2f} s' for one in measured)}", flush=True)

    return [best(dumps), best(tars)], best(firsts)


def restores(schema: str, backup_id: int, work: Path, backups_root: Path, media_root: Path) -> None:
    """With the clinic's media folder lost (moved aside, put back afterwards): `tar -xf` of its tar into a
    scratch folder, then restore_backup of the first backup, which writes every file, with the file threads
    and with one. Between the two restores the restored files are removed, so each writes them all."""
    from django.conf import settings

    clinic_media, aside, scratch = media_root / schema, work / "media-aside", work / "extracted"
    restore = [sys.executable, str(ROOT / "manage.py"), "restore_backup", "--tenant", schema, "--id", str(backup_id), "--yes"]
    clinic_media.rename(aside)
    try:
        scratch.mkdir()
        measured = [settled("tar -xf (carpeta de la clínica)", ["tar", "-xf", str(work / "media.tar"), "-C", str(scratch)])]
        shutil.rmtree(scratch)
        for label, workers in ((f"restore_backup, {settings.BACKUP_FILE_WORKERS} hilos", {}),
                               ("restore_backup, 1 hilo (BACKUP_FILE_WORKERS=1)", {"BACKUP_FILE_WORKERS": "1"})):
            measured.append(settled(label, restore, env={"BACKUPS_LOCAL_ROOT": str(backups_root), **workers}))
            shutil.rmtree(clinic_media)
    finally:
        shutil.rmtree(clinic_media, ignore_errors=True)
        aside.rename(clinic_media)
    restores_print(measured, settings.BACKUP_FILE_WORKERS)


def latest_backup(schema: str):
    from django_tenants.utils import schema_context

    from backups.models import BackupRecord

    with schema_context(schema):
        return BackupRecord.objects.filter(status="completed").order_by("-id").first()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100, help="radiographs in the clinic (default 100)")
    parser.add_argument("--full", action="store_true", help="the issue's size: 2,000 radiographs (about 5 GB)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds of the bare tools and the first backup (default 2)")
    parser.add_argument("--rows", type=int, default=5000, help="demo rows besides the radiographs (make bench passes ROWS)")
    options = parser.parse_args()
    files = 2000 if options.full else options.files
    rows = min(options.rows, 20000)  # the rows only have to be there; the files are what is measured
    django_setup()

    from django.conf import settings

    from backups.services import database_params, pg_binaries

    binaries, env = pg_binaries(), database_params().environ()
    manage = [sys.executable, str(ROOT / "manage.py")]
    small_files = max(files // 10, 10)
    big, small = f"bench_files_{files}", f"bench_files_{small_files}"
    for schema, count in ((big, files), (small, small_files)):
        ensure_bench_tenant(schema, rows=rows)
        total = ensure_radiographs(schema, count)
        print(f"{schema}: {count:,} radiografías, {total / 1e9:.2f} GB", flush=True)
    media_root = Path(settings.MEDIA_ROOT)
    work = Path(tempfile.mkdtemp(prefix="bench_files_", dir=ROOT / "var"))
    try:
        bare, first = bare_and_first(big, work, binaries.pg_dump, env, media_root, options.rounds)
        first_record = latest_backup(big)
        serial = settled(f"create_backup, primero, 1 hilo (BACKUP_FILE_WORKERS=1)", [*manage, "create_backup", "--tenant", big],
                         env={"BACKUPS_LOCAL_ROOT": str(work / "backups-serial"), "BACKUP_FILE_WORKERS": "1"})
        second = settled("create_backup, segundo sin cambios", [*manage, "create_backup", "--tenant", big],
                         env={"BACKUPS_LOCAL_ROOT": str(work / "backups-serial")})
        second_record = latest_backup(big)
        small_first = settled(f"create_backup, primero, {small_files} archivos", [*manage, "create_backup", "--tenant", small],
                              env={"BACKUPS_LOCAL_ROOT": str(work / "backups-small")})
        bare_seconds = sum(measured.seconds for measured in bare)
        first_files = first_record.manifest["seconds"]["files"]
        second_files = second_record.manifest["seconds"]["files"]
        results = [("herramientas", measured.label, f"{measured.seconds:.2f}", "", f"{measured.peak_rss_mb:.0f}") for measured in bare]
        results.append(("herramientas", "pg_dump | gzip + tar", f"{bare_seconds:.2f}", "1.00", ""))
        results += [("servicio", measured.label, f"{measured.seconds:.2f}", f"{measured.seconds / bare_seconds:.2f}",
                     f"{measured.peak_rss_mb:.0f}") for measured in (first, serial, second)]
        results.append(("servicio", small_first.label, f"{small_first.seconds:.2f}", "-", f"{small_first.peak_rss_mb:.0f}"))
        print(f"\n{files:,} radiografías, {first_record.files_size / 1e9:.2f} GB; backup SQL {first_record.file_size / 1e6:.1f} MB (gzip); "
              f"mejor de {options.rounds} rondas alternadas; antes de cada medida sync y "
              f"{'caché de páginas vaciada' if page_cache_droppable() else 'caché de páginas como esté (sin permiso para vaciarla)'}; "
              f"{settings.BACKUP_FILE_WORKERS} hilos de archivos en {os.cpu_count()} núcleos")
        print(table(results, ("quién", "qué", "segundos", "× herramientas", "RSS pico MB")))
        print(f"\nfase de archivos: primero {first_files:.2f} s ({first_record.manifest['files']['uploaded']} subidos), "
              f"segundo {second_files:.2f} s ({second_record.manifest['files']['uploaded']} subidos) = "
              f"{100 * second_files / first_files:.1f}% del primero (objetivo < 10%)")
        print(f"RSS pico del primer backup: {small_first.peak_rss_mb:.0f} MB con {small_files:,} archivos, "
              f"{first.peak_rss_mb:.0f} MB con {files:,} (×{first.peak_rss_mb / small_first.peak_rss_mb:.2f}; objetivo: plano)")
        print(f"objetivo primero ≤ 1.3× herramientas: {first.seconds / bare_seconds:.2f}×")
        restores(big, first_record.pk, work, work / f"backups-{options.rounds - 1}", media_root)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def restores_print(restored: list[Measured], workers: int) -> None:
    extract, threaded, one_thread = restored
    print("\nrestauración con la carpeta de la clínica perdida (escribe todos los archivos; incluye reponer las filas):")
    print(table([(measured.label, f"{measured.seconds:.2f}", f"{measured.seconds / extract.seconds:.2f}",
                  f"{measured.peak_rss_mb:.0f}") for measured in restored], ("qué", "segundos", "× tar -xf", "RSS pico MB")))
    print(f"restore_backup: {one_thread.seconds / threaded.seconds:.2f}× más rápido con {workers} hilos que con 1")


if __name__ == "__main__":
    main()
