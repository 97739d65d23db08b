"""Backups sealed at rest (issue 20) against the same backups written plain, same run; and a platform key rotation.

    python bench/bench_crypt.py                       # 200,000 rows and 200 radiographs
    python bench/bench_crypt.py --rows 1000000 --files 2000 --rotate 2000

A clinic of demo rows gets N radiographs (random bytes, 200 KB to 5 MB, as bench_files.py).
Then, each as a child process (Django start-up included) timed with its peak RSS, in
alternated rounds, the best of each:
- `manage.py create_backup` into an empty backups folder, BACKUP_ENCRYPTION=off and =on, and
  a second one with nothing changed (the nightly case: no file stored again);
- `manage.py restore_backup` of the plain backup and of the sealed one, with the clinic's files
  in place (only the dump is read) and with its media folder moved aside (every file written
  back from the backup);
- pyrage's own throughput, for the floor a sealed file phase cannot go under.
Before each measure `sync` and, where this process may (root), the page cache emptied.
Target: ≤ 5% extra time and the same peak RSS.
Rotation: the keys of --rotate clinic folders in a backups folder of their own (a clinic key
each, as a first sealed backup leaves it), then `manage.py rewrap_backup_keys --all-tenants`
to a new platform key: every key object rewrapped, no backup read or written.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_files import ensure_radiographs, latest_backup, page_cache_droppable, settled  # noqa: E402
from common import ROOT, Measured, django_setup, ensure_bench_tenant, measure, table  # noqa: E402

MODES = ("off", "on")


def backups(schema: str, work: Path, rounds: int) -> dict[str, tuple[Measured, int]]:
    """create_backup plain and sealed, alternated; per mode the best measure, and the id of the last
    round's backup (the one whose objects are still in the folder)."""
    manage = [sys.executable, str(ROOT / "manage.py"), "create_backup", "--tenant", schema]
    measured: dict[str, list[tuple[Measured, int]]] = {mode: [] for mode in MODES}
    for round_number in range(rounds):
        for mode in MODES:
            folder = work / f"backups-{mode}"
            shutil.rmtree(folder, ignore_errors=True)  # each first backup stores every file
            one = settled(f"create_backup, cifrado {mode}", manage,
                          env={"BACKUPS_LOCAL_ROOT": str(folder), "BACKUP_ENCRYPTION": mode})
            measured[mode].append((one, latest_backup(schema).pk))
        print(f"ronda {round_number + 1}: " + ", ".join(f"{mode} {measured[mode][-1][0].seconds:.2f} s" for mode in MODES),
              flush=True)
    return {mode: (min((one for one, _id in results), key=lambda one: one.seconds), results[-1][1])
            for mode, results in measured.items()}


def second_backups(schema: str, work: Path, rounds: int) -> dict[str, Measured]:
    """create_backup again into each mode's folder, nothing changed (the nightly case: no file read or
    stored again); its record is deleted after, so that the next round finds the same trusted backups."""
    from django_tenants.utils import schema_context

    from backups.models import BackupRecord

    manage = [sys.executable, str(ROOT / "manage.py"), "create_backup", "--tenant", schema]
    measured: dict[str, list[Measured]] = {mode: [] for mode in MODES}
    for _round in range(rounds):
        for mode in MODES:
            measured[mode].append(settled(f"create_backup, segundo, cifrado {mode}", manage,
                                          env={"BACKUPS_LOCAL_ROOT": str(work / f"backups-{mode}"), "BACKUP_ENCRYPTION": mode}))
            with schema_context(schema):
                BackupRecord.objects.filter(pk=latest_backup(schema).pk).delete()
    return {mode: min(results, key=lambda one: one.seconds) for mode, results in measured.items()}


def restores(schema: str, work: Path, made: dict[str, int], media_root: Path, rounds: int, *,
             media_lost: bool) -> dict[str, Measured]:
    """restore_backup of the plain and the sealed backup, alternated. With media_lost, the clinic's media
    folder is moved aside (put back after) and every file comes from the backup, decrypted; without,
    the files are there and only checked (no content object is read): what a sealed dump adds."""
    clinic_media, aside = media_root / schema, work / "media-aside"
    measured: dict[str, list[Measured]] = {mode: [] for mode in MODES}
    if media_lost:
        clinic_media.rename(aside)
    try:
        for round_number in range(rounds):
            for mode in MODES:
                command = [sys.executable, str(ROOT / "manage.py"), "restore_backup", "--tenant", schema,
                           "--id", str(made[mode]), "--yes"]
                measured[mode].append(settled(f"restore_backup, cifrado {mode}", command,
                                              env={"BACKUPS_LOCAL_ROOT": str(work / f"backups-{mode}"),
                                                   "BACKUP_ENCRYPTION": mode}))
                if media_lost:
                    shutil.rmtree(clinic_media, ignore_errors=True)  # the next one writes every file again
            print(f"ronda {round_number + 1}: " + ", ".join(f"{mode} {measured[mode][-1].seconds:.2f} s" for mode in MODES),
                  flush=True)
    finally:
        if media_lost:
            shutil.rmtree(clinic_media, ignore_errors=True)
            aside.rename(clinic_media)
    return {mode: min(results, key=lambda one: one.seconds) for mode, results in measured.items()}


def crypto_throughput(megabytes: int = 256) -> tuple[float, float]:
    """pyrage's own speed here, one core (it holds the GIL while it works): MB/s encrypting, decrypting."""
    import pyrage
    from pyrage import x25519

    identity = x25519.Identity.generate()
    data = os.urandom(4 * 1024 * 1024)
    count = megabytes // 4
    started = time.perf_counter()
    sealed = [pyrage.encrypt(data, [identity.to_public()]) for _ in range(count)]
    encrypting = time.perf_counter() - started
    started = time.perf_counter()
    for one in sealed:
        pyrage.decrypt(one, [identity])
    return megabytes * 1.048576 / encrypting, megabytes * 1.048576 / (time.perf_counter() - started)


def phases(schema: str, backup_id: int) -> dict:
    from django_tenants.utils import schema_context

    from backups.models import BackupRecord

    with schema_context(schema):
        return BackupRecord.objects.get(pk=backup_id).manifest["seconds"]


def rotation(clinics: int, work: Path) -> tuple[float, Measured, Measured]:
    """The keys of `clinics` clinic folders; the seconds to make them, then rewrap_backup_keys --all-tenants
    to a new platform key (with the old one still held), and a second run with nothing to do."""
    from django.core.files.storage import FileSystemStorage
    from pyrage import x25519

    from backups.storage.keys import keys_rotate, platform_identities

    folder = work / "rotation"
    storage = FileSystemStorage(location=folder)
    started = time.perf_counter()
    for index in range(clinics):
        keys_rotate(storage, f"bench_k{index:05d}")
    made = time.perf_counter() - started
    old = "\n".join(str(identity) for identity in platform_identities())
    new = x25519.Identity.generate()
    env = {"BACKUPS_LOCAL_ROOT": str(folder), "BACKUP_PLATFORM_RECIPIENTS": str(new.to_public()),
           "BACKUP_PLATFORM_IDENTITY": f"{old}\n{new}"}
    command = [sys.executable, str(ROOT / "manage.py"), "rewrap_backup_keys", "--all-tenants"]
    rewrap = measure(f"rewrap_backup_keys --all-tenants ({clinics:,} clínicas)", command, env=env)
    again = measure("otra vez (nada que hacer)", command, env=env)
    wraps = {path.name.rsplit(".", 2)[1] for path in folder.glob("*/keys/*.age")}
    assert len(wraps) == 1 and len(list(folder.glob("*/keys/*.age"))) == clinics, "every key rewrapped once"
    return made, rewrap, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="demo rows in the clinic (default 200,000)")
    parser.add_argument("--files", type=int, default=200, help="radiographs in the clinic (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds, the best of each (default 3)")
    parser.add_argument("--rotate", type=int, default=2000, help="clinic keys rewrapped (default 2,000)")
    options = parser.parse_args()
    django_setup()

    from django.conf import settings

    from backups.storage.age_format import identity_file_create

    if not settings.BACKUP_PLATFORM_IDENTITY:  # make demo's local identity (DEBUG), made here if missing
        identity_file_create(settings.BACKUP_PLATFORM_IDENTITY_FILE, "identidad LOCAL de la plataforma (make bench)")
    schema = f"bench_crypt_{options.rows}_{options.files}"
    ensure_bench_tenant(schema, rows=options.rows)
    total = ensure_radiographs(schema, options.files)
    work = Path(tempfile.mkdtemp(prefix="bench_crypt_", dir=ROOT / "var"))
    try:
        made = backups(schema, work, options.rounds)
        record = latest_backup(schema)
        ids = {mode: made[mode][1] for mode in MODES}
        seconds = {mode: phases(schema, ids[mode]) for mode in MODES}
        second = second_backups(schema, work, options.rounds)
        intact = restores(schema, work, ids, Path(settings.MEDIA_ROOT), options.rounds, media_lost=False)
        restored = restores(schema, work, ids, Path(settings.MEDIA_ROOT), options.rounds, media_lost=True)
        key_seconds, rewrap, again = rotation(options.rotate, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    encrypting, decrypting = crypto_throughput()
    print(f"\n{schema}: ~{options.rows:,} filas, {options.files:,} radiografías ({total / 1e9:.2f} GB), "
          f"dump {record.file_size / 1e6:.1f} MB (gzip); mejor de {options.rounds} rondas alternadas; "
          f"{'caché de páginas vaciada' if page_cache_droppable() else 'caché de páginas como esté'} antes de cada medida; "
          f"{settings.BACKUP_FILE_WORKERS} hilos de archivos, {os.cpu_count()} núcleos")
    rows = []
    for label, results in (("backup (primero: todos los archivos)", {mode: made[mode][0] for mode in MODES}),
                           ("backup (segundo, sin cambios: el nocturno)", second),
                           ("restauración, archivos en su lugar (el dump)", intact),
                           ("restauración, medios perdidos (todos los archivos)", restored)):
        plain, sealed = results["off"], results["on"]
        rows.append((label, f"{plain.seconds:.2f}", f"{sealed.seconds:.2f}", f"{100 * (sealed.seconds / plain.seconds - 1):+.1f}%",
                     f"{plain.peak_rss_mb:.0f} / {sealed.peak_rss_mb:.0f}"))
    print(table(rows, ("operación", "sin cifrar s", "cifrado s", "extra", "RSS pico MB (sin / con)")))
    print("fases del último backup medido (manifest.seconds), sin / con cifrado: " + ", ".join(
        f"{phase} {seconds['off'][phase]:.2f} / {seconds['on'][phase]:.2f} s" for phase in ("dump", "upload", "files")))
    print(f"pyrage aquí, un núcleo (no suelta el GIL): cifra {encrypting:.0f} MB/s, descifra {decrypting:.0f} MB/s: "
          f"{total / 1e6 / encrypting:.2f} s y {total / 1e6 / decrypting:.2f} s para los archivos de esta clínica")
    print(f"\nrotación de la clave de la plataforma: {options.rotate:,} claves de clínica creadas en {key_seconds:.2f} s; "
          f"{rewrap.label}: {rewrap.seconds:.2f} s (RSS {rewrap.peak_rss_mb:.0f} MB; arranque de Django incluido); "
          f"{again.label}: {again.seconds:.2f} s")


if __name__ == "__main__":
    main()
