"""A sealed clinic back without the database (issue 20), with the real `age` CLI, following the README.

The README's block («Recuperar una clínica cifrada…») runs as an operator would run it, in bash:
the platform identity from the environment, a copy of the bucket, a scratch database of its
own. Only its first lines (which backup, where the bucket copy and a work folder are) are given
by the test, and psql gets the database in libpq's spelling: the test server listens on a Unix
socket, which django-environ and libpq write differently in a URL.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from backups.restore import CARRIED_MODELS
from backups.services import backup_create, pg_binaries
from bitacora.services import AuditContext
from core.testing import committed_tables, database_url, scratch_database

pytestmark = pytest.mark.committed
CONTEXT = AuditContext.system("prueba-recuperar-cifrado")
README = Path(settings.BASE_DIR) / "README.md"
BLOCK_TITLE = "# Recuperar una clínica cifrada sin la base de datos"
GIVEN = ("CLINICA=", "BACKUP=", "BUCKET=", "TRABAJO=")
CARRIED = tuple(model._meta.db_table for model in CARRIED_MODELS)


def readme_block() -> str:
    """The README's shell block for a sealed clinic, without the lines the test gives."""
    text = README.read_text(encoding="utf-8")
    start = text.index(BLOCK_TITLE)
    block = text[start:text.index("```", start)]
    lines = [line for line in block.splitlines() if not line.startswith(GIVEN) and not line.startswith("rm -rf")]
    return "\n".join(lines).replace('psql -v ON_ERROR_STOP=1 --single-transaction "$DATABASE_URL"',
                                    'psql -v ON_ERROR_STOP=1 --single-transaction "$PSQL_URL"')


def libpq_url(dbname: str) -> str:
    db = connection.settings_dict
    host = db["HOST"] or "localhost"
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    return f"postgresql://{user}{password}@{quote(host, safe='')}:{db['PORT'] or 5432}/{dbname}"


def test_a_sealed_clinic_comes_back_from_the_bucket_and_the_platform_identity_with_the_age_cli(
    committed_db, sealed, backups_dir, media_dir, media_files, tmp_path, age_cli,
):
    # given a sealed backup of a clinic with radiographs
    media_files(count=3)
    backup = backup_create(context=CONTEXT)
    at_backup_time = committed_tables("test_restore", exclude=CARRIED)
    files = dict(backup.files.exclude(sha256="").values_list("path", "sha256"))
    work, new_media = tmp_path / "trabajo", tmp_path / "media-nueva"
    work.mkdir(mode=0o700)
    # when the operator follows the README with only the bucket and the platform's identity
    with scratch_database() as name:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "core.test_settings", "PYTHONDONTWRITEBYTECODE": "1",
               "PATH": f"{Path(sys.executable).parent}:{pg_binaries().bin_dir}:{os.environ['PATH']}",
               "DATABASE_URL": database_url(name), "PSQL_URL": libpq_url(name),
               "BACKUP_PLATFORM_IDENTITY": Path(settings.BACKUP_PLATFORM_IDENTITY_FILE).read_text(),
               "BACKUP_PLATFORM_IDENTITY_FILE": str(tmp_path / "ninguna.txt"),
               "MEDIA_ROOT": str(new_media), "BACKUP_TEMP_DIR": str(tmp_path / "tmp"),
               "CLINICA": "test_restore", "BACKUP": backup.file_path.removesuffix(".sql.gz"),
               "BUCKET": str(backups_dir), "TRABAJO": str(work)}
        env.pop("DEBUG", None)
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_block()], cwd=settings.BASE_DIR, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        # then the scratch database holds the clinic as it was, table by table
        recovered = committed_tables("test_restore", dbname=name, exclude=CARRIED)
    assert [table for table in at_backup_time if recovered.get(table) != at_backup_time[table]] == []
    # and every file is back at its path, byte for byte
    assert {path: hashlib.sha256((new_media / path).read_bytes()).hexdigest() for path in files} == files
    # and, with age alone, the list names each content's object, which opens with the clinic's keys to its bytes
    entries = [json.loads(line) for line in (work / "lista.jsonl").read_text().splitlines()[1:]]
    assert {entry["path"] for entry in entries if entry["sha256"]} == set(files)
    for entry in entries:
        if entry["sha256"]:
            opened = subprocess.run([age_cli, "-d", "-i", str(work / "clinica.key"), str(backups_dir / entry["object"])],
                                    capture_output=True, check=True)
            assert hashlib.sha256(opened.stdout).hexdigest() == entry["sha256"]
    # and the dump the CLI decrypted is the one the record describes
    assert hashlib.sha256((work / "backup.sql.gz").read_bytes()).hexdigest() == backup.sha256
    assert hashlib.sha256(gzip.decompress((work / "backup.sql.gz").read_bytes())).hexdigest() == backup.sql_sha256
