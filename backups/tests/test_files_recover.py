"""Patient files back from a backup's file list alone, after the database was lost (manage.py restore_backup_files).

Committed (marker `committed`), in the test_restore clinic: the backup's file list comes
from the dump's snapshot, which sees only committed rows.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil

import pytest
from django.core.management import CommandError, call_command

from backups.files.media import file_object_key
from backups.models import BackupRecord
from backups.services import backup_create
from bitacora.services import AuditContext
from core.testing import database_url, run_manage

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-recuperar-archivos")
# The child is pointed at a database that does not exist: the command must not need one.
LOST_DATABASE = "clinica_base_perdida"


def restore_files(*args: str, backups_dir, media_dir, temp_dir):
    return run_manage("restore_backup_files", *args, MEDIA_ROOT=str(media_dir), BACKUPS_LOCAL_ROOT=str(backups_dir),
                      BACKUP_TEMP_DIR=str(temp_dir), DATABASE_URL=database_url(LOST_DATABASE))


def media_state(media_dir, paths) -> dict[str, tuple[str, int, int]]:
    """sha256, inode and modification time of each path: a file written again would change them."""
    state = {}
    for path in paths:
        stat = (media_dir / path).stat()
        state[path] = (hashlib.sha256((media_dir / path).read_bytes()).hexdigest(), stat.st_ino, stat.st_mtime_ns)
    return state


def backed_up_clinic(media_files) -> tuple[BackupRecord, str, dict[str, str]]:
    """A backup of the clinic with its radiographs: the record, its list's key, and path → sha256 of what it holds."""
    media_files(count=3)
    backup = backup_create(context=CONTEXT)
    saved = dict(backup.files.exclude(sha256="").values_list("path", "sha256"))
    return backup, backup.manifest["files"]["list"]["object"], saved


def test_the_files_come_back_from_the_list_alone_and_a_taken_path_is_never_overwritten(
    committed_db, backups_dir, media_dir, media_files, tmp_path,
):
    # given a backup, then the database's backup records lost and the media files with them
    _backup, list_key, saved = backed_up_clinic(media_files)
    BackupRecord.objects.all().delete()
    shutil.rmtree(media_dir)
    # and other bytes at one of the paths
    taken = sorted(saved)[0]
    (media_dir / taken).parent.mkdir(parents=True)
    (media_dir / taken).write_bytes(b"otra radiografia")
    # when the operator runs the recovery command, with no database at all
    done = restore_files("--list", list_key, backups_dir=backups_dir, media_dir=media_dir, temp_dir=tmp_path / "tmp")
    # then every free path has its backup-time bytes, the taken one is untouched and reported, and it fails
    assert done.returncode == 1, done.stdout + done.stderr
    free = sorted(set(saved) - {taken})
    after_first = media_state(media_dir, free)
    assert {path: state[0] for path, state in after_first.items()} == {path: saved[path] for path in free}
    assert (media_dir / taken).read_bytes() == b"otra radiografia"
    assert f"{taken}: conflicto" in done.stderr
    assert f"escritos: {len(free)}, ya estaban: 0, conflictos: 1, contenidos ausentes: 0" in done.stdout
    # when the conflict is cleared and the command runs again
    (media_dir / taken).unlink()
    done = restore_files("--list", list_key, backups_dir=backups_dir, media_dir=media_dir, temp_dir=tmp_path / "tmp")
    # then it succeeds writing only that path: the others are the very same files as before
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"escritos: 1, ya estaban: {len(free)}, conflictos: 0" in done.stdout
    assert media_state(media_dir, free) == after_first
    assert hashlib.sha256((media_dir / taken).read_bytes()).hexdigest() == saved[taken]


def test_a_dry_run_writes_nothing_and_missing_or_damaged_contents_are_reported(
    committed_db, backups_dir, media_dir, media_files, capsys,
):
    # given a backup, the media files lost, one content object gone and another damaged
    _backup, list_key, saved = backed_up_clinic(media_files)
    shutil.rmtree(media_dir)
    gone, damaged, *fine = sorted(saved)
    (backups_dir / file_object_key("test_restore", saved[gone])).unlink()
    (backups_dir / file_object_key("test_restore", saved[damaged])).write_bytes(b"no es la radiografia")
    # when it is a dry run, then nothing is written, and every path says what would happen
    with pytest.raises(CommandError, match="1 archivo"):
        call_command("restore_backup_files", "--list", list_key, "--dry-run")
    output = capsys.readouterr()
    assert not media_dir.exists()
    assert f"{gone}: su contenido falta" in output.err
    assert all(f"{path}: se escribiría" in output.out for path in [damaged, *fine])
    # when it runs, then the missing and the damaged contents write nothing, and the others come back
    with pytest.raises(CommandError, match="2 archivo"):
        call_command("restore_backup_files", "--list", list_key)
    assert not (media_dir / gone).exists() and not (media_dir / damaged).exists()
    assert {path: state[0] for path, state in media_state(media_dir, fine).items()} == {path: saved[path] for path in fine}
    assert f"{damaged}: su contenido en el almacenamiento de backups está dañado" in capsys.readouterr().err


def test_anything_but_a_file_list_is_refused_in_one_line(committed_db, backups_dir, media_dir, media_files):
    backup, list_key, _saved = backed_up_clinic(media_files)
    with pytest.raises(CommandError, match="no se puede leer"):
        call_command("restore_backup_files", "--list", backup.file_path)
    # an entry naming a content outside the clinic's folder is not followed
    header = {**json.loads(gzip.decompress((backups_dir / list_key).read_bytes()).splitlines()[0]), "count": 1}
    entry = {"path": "rx/a.png", "sha256": "../../otra_clinica/x", "size": 1}
    forged = backups_dir / "test_restore" / "forged.files.jsonl.gz"
    forged.write_bytes(gzip.compress(f"{json.dumps(header)}\n{json.dumps(entry)}\n".encode()))
    with pytest.raises(CommandError, match="no se puede leer"):
        call_command("restore_backup_files", "--list", "test_restore/forged.files.jsonl.gz")
    assert not (media_dir / "rx").exists()
    with pytest.raises(CommandError, match="no existe"):
        call_command("restore_backup_files", "--list", "test_restore/manual/no_existe.files.jsonl.gz")


def _forged_list(backups_dir, list_key: str, entries: list, *, header: dict | None = None, raw_lines: list[bytes] = ()) -> str:
    """A list stored beside the clinic's backups: its real header (or another), then these entries."""
    real = json.loads(gzip.decompress((backups_dir / list_key).read_bytes()).splitlines()[0])
    header = {**real, **(header or {}), "count": len(entries) + len(raw_lines)}
    lines = [json.dumps(header).encode()] + [json.dumps(entry).encode() for entry in entries] + list(raw_lines)
    key = f"test_restore/manual/forjada_{len(entries)}_{len(raw_lines)}.files.jsonl.gz"
    (backups_dir / key).parent.mkdir(parents=True, exist_ok=True)
    (backups_dir / key).write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    return key


def _media_files(media_dir) -> dict[str, bytes]:
    return {str(path.relative_to(media_dir)): path.read_bytes() for path in media_dir.rglob("*") if path.is_file()}


@pytest.mark.parametrize("path", [
    "test_b/radiografias/de_otra.png",
    "test_restore/radiografias/../../test_b/radiografias/de_otra.png",
    "/test_b/radiografias/de_otra.png",
    "test_restore/radiografias/nul\x00.png",
    "test_restore/radiografias/" + "x" * 500 + ".png",
    "test_restore/radiografias/salto\n.png",
])
def test_a_list_entry_outside_the_clinics_folder_is_refused_and_the_others_come_back(
    committed_db, backups_dir, media_dir, media_files, capsys, path,
):
    # given a list of this clinic naming its own files and one path it may not write
    _backup, list_key, saved = backed_up_clinic(media_files)
    shutil.rmtree(media_dir)
    listed = [json.loads(row) for row in gzip.decompress((backups_dir / list_key).read_bytes()).splitlines()[1:]]
    good = next(entry for entry in listed if entry["sha256"])
    key = _forged_list(backups_dir, list_key, [good, {**good, "path": path}])
    # when the operator checks it, then runs it
    with pytest.raises(CommandError, match="sin reponer"):
        call_command("restore_backup_files", "--list", key, "--dry-run")
    assert "ruta rechazada" in capsys.readouterr().err
    with pytest.raises(CommandError, match="sin reponer"):
        call_command("restore_backup_files", "--list", key)
    # then only the clinic's own file is back, and nothing was written anywhere else
    assert list(_media_files(media_dir)) == [good["path"]]
    assert hashlib.sha256((media_dir / good["path"]).read_bytes()).hexdigest() == good["sha256"]


def test_a_list_whose_header_names_another_clinic_writes_nothing(committed_db, backups_dir, media_dir, media_files):
    # given a list stored under this clinic whose header names another one
    _backup, list_key, saved = backed_up_clinic(media_files)
    shutil.rmtree(media_dir)
    good = sorted(saved)[0]
    key = _forged_list(backups_dir, list_key, [{"path": good.replace("test_restore", "test_b", 1), "sha256": saved[good],
                                                "size": 1}], header={"schema": "test_b", "storage_prefix": "test_b/files/"})
    # when it runs, also when the operator names that other clinic
    with pytest.raises(CommandError, match="no se puede leer.*other_clinic"):
        call_command("restore_backup_files", "--list", key)
    with pytest.raises(CommandError, match="no se puede leer"):
        call_command("restore_backup_files", "--list", list_key, "--tenant", "test_b")
    # then nothing was written
    assert not media_dir.exists() or _media_files(media_dir) == {}


def test_a_bad_line_anywhere_in_the_list_refuses_it_before_any_file_is_written(
    committed_db, backups_dir, media_dir, media_files, tmp_path,
):
    # given a list whose good entries come first, then a line of several MiB (or no JSON)
    _backup, list_key, saved = backed_up_clinic(media_files)
    shutil.rmtree(media_dir)
    rows = gzip.decompress((backups_dir / list_key).read_bytes()).splitlines()[1:]
    entries = [json.loads(row) for row in rows]
    for bad, error in [(b'{"path": "' + b"a" * (8 * 1024 * 1024) + b'"}', "line_too_long"), (b"no es json", "")]:
        key = _forged_list(backups_dir, list_key, entries, raw_lines=[bad])
        # when the operator runs it, in a process of its own
        done = restore_files("--list", key, backups_dir=backups_dir, media_dir=media_dir, temp_dir=tmp_path / "tmp")
        # then it ends in one line, without a traceback, and not one file was written
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.strip().startswith("CommandError:"), done.stderr
        assert error in done.stderr
        assert not media_dir.exists() or _media_files(media_dir) == {}
