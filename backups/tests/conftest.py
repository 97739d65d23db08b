"""Fixtures of the backups tests: a local Supabase Storage server and backends pointed at it."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from backups.supabase_storage import SupabaseStorage
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
