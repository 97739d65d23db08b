"""Seed 000's guide, TROUBLESHOOTING and PRÓXIMOS PASOS, run as an operator runs it in a Render
shell: each command in a subprocess, against `make demo`'s clinics, with the answer it gives.

The snippets are the seed's own text; where the seed file is beside the repository
(../shared/seeds), a test checks they are still word for word in it.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from django.conf import settings

from core.tests.conftest import BASE_DIR, DEMO_PASSWORD

SEEDS = Path(settings.BASE_DIR).parent / "shared" / "seeds"

# TROUBLESHOOTING, "Solución en Render Shell"
SHOWMIGRATIONS = "python manage.py showmigrations backups"
MIGRATE = "python manage.py migrate backups"
SHELL = "python manage.py shell"
SHELL_IMPORTS = [">>> from backups.models import BackupRecord", ">>> from backups.views import BackupHistoryListView", ">>> exit()"]
SHOW_URLS = "python manage.py show_urls | grep backups"
# PRÓXIMOS PASOS 1, "Probar importación"
SHELL_COUNT = [">>> from backups.models import BackupRecord", ">>> BackupRecord.objects.count()"]
# PRÓXIMOS PASOS 2, "Probar Endpoint Manualmente" (the host is the test server's)
CURL = '''curl -X GET \\
  https://clinica-dental-backend.onrender.com/api/backups/history/ \\
  -H "Authorization: Bearer {token}" \\
  -H "X-Tenant-ID: clinica_demo"'''
# PRÓXIMOS PASOS 3, "Crear Backups de Prueba" (en Django shell)
TEST_RECORD = """from backups.models import BackupRecord
from usuarios.models import Usuario

admin = Usuario.objects.get(email='admin@clinicademo1.com')

backup = BackupRecord.objects.create(
    file_name='backup_test_2025-11-27.sql',
    file_path='backups/clinica_demo/test.sql',
    file_size=1024000,
    backup_type='manual',
    created_by=admin
)
"""
# DEBUGGING, "Test de URL patterns"
URL_PATTERN = """from django.urls import reverse

# Debe funcionar
url = reverse('backups:backup_history')
print(url)  # /api/backups/history/
"""
TENANT_SHELL = "python manage.py shell --tenant clinica_demo"
ADVICE = "Salga con exit() y abra el shell de una clínica: python manage.py shell --tenant clinica_demo (clínicas: clinica_demo, clinica_norte)."


def _argv(command: str) -> list[str]:
    """`python manage.py …` with this interpreter: the operator's `python` is the project's."""
    assert command.startswith("python manage.py ")
    return command.split()[2:]


def _shell_lines(lines: list[str]) -> list[str]:
    return [line.removeprefix(">>> ") for line in lines]


def _migrations(app: str) -> list[str]:
    return sorted(path.stem for path in (BASE_DIR / app / "migrations").glob("0*.py"))


@pytest.fixture
def interactive(demo_site):
    """interactive("shell", "--tenant", "x") → a manage.py command at a terminal (pexpect), closed afterwards."""
    pexpect = pytest.importorskip("pexpect", reason="pexpect is in requirements-dev.txt")
    children = []

    def spawn(*args: str):
        child = pexpect.spawn(sys.executable, ["manage.py", *args], cwd=str(BASE_DIR), encoding="utf-8", timeout=60,
                              env={**demo_site.env, "TERM": "dumb"}, dimensions=(50, 400))
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close(force=True)


def _type(child, line: str) -> str:
    """Type one line at the >>> prompt; what the shell answered."""
    child.sendline(line)
    child.expect(">>> ")
    answer = child.before.replace("\r\n", "\n")
    return answer.split("\n", 1)[1] if "\n" in answer else ""  # the first line echoes what was typed


@pytest.mark.skipif(not SEEDS.is_dir(), reason="seed 000 is not beside the repository (../shared/seeds)")
def test_the_snippets_here_are_the_seeds_own_words():
    seed = next(SEEDS.glob("000_*.txt")).read_text(encoding="utf-8")
    for command in (SHOWMIGRATIONS, MIGRATE, SHELL, SHOW_URLS, *SHELL_IMPORTS, *SHELL_COUNT, CURL, TEST_RECORD.strip(),
                    URL_PATTERN.strip()):
        assert command in seed, command


def test_showmigrations_backups_shows_each_clinics_migrations(demo_site):
    # when the operator checks the backups migrations
    result = demo_site.manage(*_argv(SHOWMIGRATIONS))
    # then public says the app lives in the clinics, and the clinics list what they applied
    applied = "".join(f" [X] {name}\n" for name in _migrations("backups"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "== public ==\n"
        "(backups: app de clínica, sin tablas en public; sus migraciones están en cada clínica)\n"
        "== clinica_demo, clinica_norte (2 clínicas) ==\n"
        f"backups\n{applied}"
    )


def test_showmigrations_for_one_clinic_and_for_public(demo_site):
    one = demo_site.manage("showmigrations", "backups", "--tenant", "clinica-norte")
    public = demo_site.manage("showmigrations", "core", "--tenant", "public")
    assert one.stdout.startswith("== clinica_norte ==\nbackups\n [X] 0001_initial\n")
    assert public.stdout == "== public ==\ncore\n [X] 0001_initial\n"


def test_migrate_backups_migrates_public_and_every_clinic(demo_site):
    # when the operator applies the backups migrations
    result = demo_site.manage(*_argv(MIGRATE))
    # then django-tenants runs them in public and in each clinic; all are applied already
    assert result.returncode == 0, result.stderr
    for schema in ("public", "clinica_demo", "clinica_norte"):
        assert re.search(rf"standard:{schema}\]\s+No migrations to apply\.", result.stdout), (schema, result.stdout)


def test_the_shell_says_where_it_is_and_imports_the_module(interactive):
    # when the operator opens the shell at a terminal and types the seed's imports
    shell = interactive(*_argv(SHELL))
    shell.expect(">>> ")
    banner = shell.before
    answers = [_type(shell, line) for line in _shell_lines(SHELL_IMPORTS[:2])]
    shell.sendline("exit()")
    shell.expect(pytest.importorskip("pexpect").EOF)
    # then the banner says it is the platform's schema and how to open a clinic, and the imports work
    assert "Shell en el esquema public" in banner and ADVICE in banner
    assert answers == ["", ""]


def test_show_urls_lists_the_backup_routes(demo_site):
    # when the operator greps the URL list
    result = demo_site.run(SHOW_URLS.replace("python", sys.executable, 1))
    # then seed 000's routes are there, with their views and names
    routes = {line.split("\t")[0]: line.split("\t")[1:] for line in result.stdout.splitlines()}
    assert result.returncode == 0, result.stderr
    assert routes["/api/backups/history/"] == ["backups.views.BackupHistoryListView", "backups:backup_history"]
    assert routes["/api/backups/create/"] == ["backups.views.BackupCreateView", "backups:backup_create"]
    assert routes["/api/backups/history/<int:backup_id>/"][1] == "backups:backup_detail"
    assert routes["/api/backups/history/<int:backup_id>/download/"][1] == "backups:backup_download"


def test_counting_backups_in_the_plain_shell_says_how_to_open_a_clinic(interactive):
    # when the operator counts backups in the shell the guide opens (the public schema)
    shell = interactive(*_argv(SHELL))
    shell.expect(">>> ")
    _type(shell, _shell_lines(SHELL_COUNT)[0])
    answer = _type(shell, _shell_lines(SHELL_COUNT)[1])
    # then instead of `relation does not exist`, the error says what to do
    assert answer.splitlines()[-1] == (
        "core.management.commands.shell.ClinicDataInPublicError: «backups_backuprecord» es una tabla de cada clínica y "
        f"este shell está en el esquema public (la plataforma). {ADVICE}"
    )


def test_counting_backups_in_a_clinics_shell_answers_the_count(interactive, demo_site):
    # when the operator follows that advice and counts again
    shell = interactive(*_argv(TENANT_SHELL))
    shell.expect(">>> ")
    banner = shell.before
    _type(shell, _shell_lines(SHELL_COUNT)[0])
    answer = _type(shell, _shell_lines(SHELL_COUNT)[1])
    # then the shell is in clinica_demo and answers its count
    (count,), = demo_site.sql("SELECT count(*) FROM clinica_demo.backups_backuprecord")
    assert "Shell en la clínica «Clínica Dental Demo» (esquema clinica_demo)" in banner
    assert answer.strip() == str(count)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_lists_the_history_with_a_token_of_the_clinic(demo_site, demo_server):
    # given an access token of clinica_demo's admin, asked for with curl as the README shows
    login = demo_site.run(["curl", "-s", "-X", "POST", f"{demo_server}/api/auth/token/", "-H", "X-Tenant-ID: clinica_demo",
                           "-H", "Content-Type: application/json",
                           "-d", json.dumps({"email": "admin@clinicademo1.com", "password": DEMO_PASSWORD})])
    token = json.loads(login.stdout)["access"]
    # when the guide's curl runs against this server
    command = CURL.replace("https://clinica-dental-backend.onrender.com", demo_server).replace("{token}", token)
    result = demo_site.run(command.replace("curl ", "curl -s ", 1))
    # then it answers the history: a JSON array, newest first
    history = json.loads(result.stdout)
    (count,), = demo_site.sql("SELECT count(*) FROM clinica_demo.backups_backuprecord")
    assert isinstance(history, list) and len(history) == count


def test_the_test_record_snippet_works_in_a_clinics_shell(demo_site):
    # when the operator pastes the seed's snippet into the clinic's shell
    created = demo_site.manage(*_argv(TENANT_SHELL), stdin=TEST_RECORD)
    try:
        listed = demo_site.manage("list_backups", "--tenant", "clinica_demo")
        rows = demo_site.sql("SELECT r.file_size, r.backup_type, u.email FROM clinica_demo.backups_backuprecord r "
                             "JOIN clinica_demo.usuarios_usuario u ON u.id = r.created_by_id "
                             "WHERE r.file_name = 'backup_test_2025-11-27.sql'")
    finally:
        demo_site.sql("DELETE FROM clinica_demo.backups_backuprecord WHERE file_name = 'backup_test_2025-11-27.sql'")
    # then the record is in that clinic's history, made by its admin
    assert created.returncode == 0, created.stderr
    assert "backup_test_2025-11-27.sql" in listed.stdout
    assert rows == [(1024000, "manual", "admin@clinicademo1.com")]


def test_the_test_record_snippet_in_the_plain_shell_says_what_to_do(demo_site):
    # when the snippet goes to the shell the guide opens (public), where there is no such clinic user or table
    result = demo_site.manage(*_argv(SHELL), stdin=TEST_RECORD)
    # then it fails with the way into a clinic, and nothing was written anywhere
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "core.management.commands.shell.ClinicDataInPublicError: Ningún usuario coincide en el esquema public (la "
        f"plataforma), que sólo tiene los de la plataforma; los de cada clínica están en su esquema. {ADVICE}"
    )
    assert demo_site.sql("SELECT count(*) FROM clinica_demo.backups_backuprecord WHERE file_name = 'backup_test_2025-11-27.sql'") == [(0,)]


def test_the_url_pattern_check_prints_the_history_path(demo_site):
    result = demo_site.manage(*_argv(SHELL), stdin=URL_PATTERN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "/api/backups/history/"


def test_the_readme_operator_section_shows_the_same_commands():
    readme = (BASE_DIR / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Operación", 1)[1].split("\n## ", 1)[0]
    for command in (SHOWMIGRATIONS, MIGRATE, SHELL, TENANT_SHELL, SHOW_URLS, *SHELL_COUNT, TEST_RECORD.strip(),
                    "/clinicas/clinica-demo/admin/", "/admin/plataforma/backups/"):
        assert command in section, command
