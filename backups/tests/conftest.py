"""Fixtures of the backups tests: a local Supabase Storage server and backends pointed at it."""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import date

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import connection
from django_tenants.utils import schema_context

from backups.storage.supabase import SupabaseStorage
from backups.tests.supabase_server import FakeSupabaseStorage, closed_port_url


@pytest.fixture
def supabase_server(tmp_path) -> Iterator[FakeSupabaseStorage]:
    """A fresh Supabase Storage server on 127.0.0.1 for one test; ``stop()`` takes it down."""
    server = FakeSupabaseStorage(tmp_path / "supabase").start()
    yield server
    server.stop()


@pytest.fixture
def supabase_storage_for(supabase_server) -> Iterator[Callable[..., SupabaseStorage]]:
    """supabase_storage_for(key=..., url=...) → a SupabaseStorage on the test server, closed afterwards."""
    made: list[SupabaseStorage] = []

    def make(**options) -> SupabaseStorage:
        storage = SupabaseStorage(**{"url": supabase_server.url, "key": supabase_server.key, "bucket": "backups", **options})
        made.append(storage)
        return storage

    yield make
    for storage in made:
        if storage._client is not None:
            storage._client.session.close()


@pytest.fixture
def supabase_storage(supabase_storage_for) -> SupabaseStorage:
    return supabase_storage_for()


@pytest.fixture
def down_url() -> str:
    """A Supabase URL whose port is closed: every connection is refused."""
    return closed_port_url()


@pytest.fixture
def backups_dir(settings, tmp_path):
    """Backups stored on the local file system, in a folder of this test's own."""
    location = tmp_path / "backups"
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": location}},
    }
    return location


@pytest.fixture
def media_dir(settings, tmp_path):
    """The clinic's files (STORAGES["default"]) in a folder of this test's own."""
    location = tmp_path / "media"
    settings.MEDIA_ROOT = location
    return location


MEDIA_BUCKET = "media"


@pytest.fixture
def supabase_media(settings, supabase_server) -> Iterator[FakeSupabaseStorage]:
    """The clinic's files (STORAGES["default"]) in the test Supabase server's own `media` bucket, as
    deployed (SUPABASE_MEDIA_BUCKET); the server is yielded."""
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "backups.supabase_storage.SupabaseStorage",
        "OPTIONS": {"url": supabase_server.url, "key": supabase_server.key, "bucket": MEDIA_BUCKET}}}
    yield supabase_server
    media = storages["default"]
    if media._client is not None:
        media._client.session.close()


@pytest.fixture
def media_files(media_dir) -> Iterator[Callable[..., list]]:
    """media_files(count=2): every file the current clinic's radiographs name gets random bytes,
    and `count` new radiographs (with their files) are added; removed again afterwards.

    Committed tests share the test_restore clinic across runs (--reuse-db): radiographs
    left behind made every later backup in them hash and store more files (835 after a
    day's runs, and the suite twice as slow).
    """
    from clinica.models import Paciente, Radiografia

    schema = connection.schema_name
    last_before = Radiografia.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    def make(count: int = 0, size: int = 2048) -> list[Radiografia]:
        storage = storages["default"]
        for path in Radiografia.objects.exclude(archivo="").values_list("archivo", flat=True).distinct():
            if not storage.exists(path):
                assert storage.save(path, ContentFile(os.urandom(size))) == path
        paciente = Paciente.objects.order_by("pk").first()
        return [
            Radiografia.objects.create(
                paciente=paciente, tomada_en=date.today(), descripcion="Panorámica",
                archivo=ContentFile(os.urandom(size), name=f"rx_{uuid.uuid4().hex[:12]}.png"),
            )
            for _ in range(count)
        ]

    yield make
    with schema_context(schema):  # a restore in the test may have brought some back: every later pk
        Radiografia.objects.filter(pk__gt=last_before).delete()


@pytest.fixture
def sealed(settings):
    """Backups sealed at rest (backups.storage.sealed), to the test suite's platform identity."""
    settings.BACKUP_ENCRYPTION = "on"
    return settings


def raw_objects(location) -> dict[str, bytes]:
    """Every object of a local backups storage as it lies on disk: name → bytes."""
    return {path.relative_to(location).as_posix(): path.read_bytes() for path in sorted(location.rglob("*")) if path.is_file()}


@pytest.fixture(scope="session")
def age_cli() -> str:
    """Debian's `age` CLI, as an operator would use it. `make test` installs it (apt-get) where it can:
    as root (CI) a missing one is a failure, not a skipped test; elsewhere the test skips, saying why."""
    path = shutil.which("age")
    if path is None:
        message = "the age CLI is not installed (apt-get install age; `make test` does it as root)"
        if os.geteuid() == 0 or os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def committed_operator(committed_db):
    """A superuser of the public admin, committed, logged in on the platform's host; removed afterwards."""
    from backups.tests.test_platform_admin import PASSWORD, PlatformClient
    from usuarios.models import Usuario

    email = f"operador-{uuid.uuid4().hex[:8]}@plataforma.test"
    with schema_context("public"):
        user = Usuario.objects.create_superuser(email, PASSWORD, nombre="Op", apellido="Plataforma")
    yield PlatformClient().admin_login(email)
    with schema_context("public"):  # not delete(): its cascade walks the clinics' tables, absent from public
        Usuario.objects.filter(pk=user.pk)._raw_delete("default")
