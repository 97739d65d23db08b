"""Patient files on the local disk (core.media_storage): whole at their names or not there, never
over another file, and nothing of a cut write left once the reaper has run."""
from __future__ import annotations

import os

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile, File

from core.files import named_file_locked
from core.media_storage import PARTIAL_FOLDER, MediaFileSystemStorage, media_partials_reap

pytestmark = pytest.mark.no_test_db

NAME = "test_a/radiografias/rx.png"


class _BrokenAfterFirstChunk(File):
    """Content whose source fails after its first chunk, as a download cut short does."""

    def chunks(self, chunk_size=None):
        yield b"the first bytes of a radiograph"
        raise OSError("the source went away")


@pytest.fixture
def media(settings, tmp_path) -> MediaFileSystemStorage:
    settings.MEDIA_ROOT = tmp_path / "media"
    return MediaFileSystemStorage()


def test_a_save_whose_content_fails_midway_leaves_nothing_at_the_name_nor_beside_it(media, tmp_path):
    # when a save's content fails after some bytes were written
    with pytest.raises(OSError):
        media.save(NAME, _BrokenAfterFirstChunk(None, name="rx.png"))
    # then the name holds nothing, and no partial file is left anywhere in the media folder
    assert not media.exists(NAME)
    assert [path for path in (tmp_path / "media").rglob("*") if path.is_file()] == []


def test_a_save_publishes_the_whole_file_and_never_replaces_one(media):
    # given a file at the name
    assert media.save(NAME, ContentFile(b"la primera")) == NAME
    # when another save asks for the same name
    other = media.save(NAME, ContentFile(b"la segunda, mas larga"))
    # then the first is untouched and the second got a name of its own, each whole, with Django's usual mode
    assert other != NAME and other.startswith("test_a/radiografias/rx_")
    assert media.open(NAME).read() == b"la primera" and media.open(other).read() == b"la segunda, mas larga"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(media.path(other)).st_mode & 0o777 == 0o666 & ~umask
    assert list(media.partial_folder.iterdir()) == []


def test_the_reaper_removes_the_partial_files_of_dead_writers_only(media, settings):
    # given a partial file a live writer holds (this process), and one whose writer died (nobody holds it)
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "core.media_storage.MediaFileSystemStorage"}}
    media.partial_folder.mkdir(parents=True)
    held, descriptor = named_file_locked(media.partial_folder)
    (media.partial_folder / "clinica-left-by-a-dead-writer").write_bytes(b"part of a radiograph")
    try:
        # when the reaper runs
        removed = media_partials_reap()
        # then only the dead writer's file is gone
        assert removed == ["clinica-left-by-a-dead-writer"]
        assert [path.name for path in media.partial_folder.iterdir()] == [held.name]
    finally:
        os.close(descriptor)
    assert media_partials_reap() == [held.name]


def test_the_partial_folder_is_no_clinics_name_and_overwriting_cannot_be_configured(media):
    # a clinic's names begin with its schema, which never begins with a dot
    assert PARTIAL_FOLDER.startswith(".")
    with pytest.raises(ImproperlyConfigured):
        MediaFileSystemStorage(allow_overwrite=True)
