"""Patient files held in Supabase Storage (SUPABASE_MEDIA_BUCKET), as deployed on Render, where the web
service, the worker and the cron job share no disk: backups read them there, restores and
restore_backup_files write them there, create-only.

Against the local server speaking Supabase Storage's protocol (supabase_server.py), committed
in the test_restore clinic; backups go to the local disk (backups_dir).
"""
from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from backups.files.recover import Recovered, files_recover
from backups.models import BackupRecord
from backups.restore import backup_restore_in_place
from backups.services import backup_create, backup_verify
from backups.tests.conftest import MEDIA_BUCKET
from backups.tests.test_files import CONTEXT, live_files

pytestmark = pytest.mark.committed


def media_downloads(server, before: int = 0) -> Counter:
    """How many times each media object was downloaded since the server had served `before` downloads."""
    return Counter(download.name for download in server.downloads[before:])


def media_objects(server) -> dict[str, str]:
    """The media bucket: name → sha256 of the bytes the server holds."""
    return {name: hashlib.sha256(server.read(bucket, name)).hexdigest()
            for bucket, name in list(server.objects) if bucket == MEDIA_BUCKET}


def test_a_clinic_with_its_files_in_supabase_storage_backs_them_up_reading_each_once_and_restores_them_create_only(
    committed_db, backups_dir, supabase_media, media_files,
):
    # given a clinic whose radiographs' files are objects in the media bucket, none on any disk
    lost, overwritten, *_others = media_files(count=4, size=96 * 1024)
    named = set(live_files())
    assert named and named <= set(media_objects(supabase_media))
    # when it is backed up
    downloads = len(supabase_media.downloads)
    first = backup_create(context=CONTEXT)
    # then every object its rows name was downloaded exactly once and stored with its sha256
    assert media_downloads(supabase_media, downloads) == Counter(named)
    assert dict(first.files.values_list("path", "sha256")) == {path: media_objects(supabase_media)[path] for path in named}
    assert first.files.filter(modified_at__isnull=True).count() == 0  # the objects' own times, for the next backup
    assert backup_verify(context=CONTEXT, backup=first) == BackupRecord.Integrity.OK
    # when it is backed up again, nothing changed
    downloads, requests = len(supabase_media.downloads), len(supabase_media.requests)
    second = backup_create(context=CONTEXT)
    # then no object is read again (size and time, from one info request each, match the first backup's
    # entries) and nothing is uploaded
    assert media_downloads(supabase_media, downloads) == Counter()
    info = f"/storage/v1/object/info/{MEDIA_BUCKET}/"
    assert Counter(path.removeprefix(info) for _method, path in supabase_media.requests[requests:]
                   if path.startswith(info)) == Counter(named)
    assert second.manifest["files"]["uploaded"] == 0
    assert dict(second.files.values_list("path", "sha256")) == dict(first.files.values_list("path", "sha256"))
    # when one object is lost and another replaced by other bytes, and the clinic is restored to the first backup
    lost_sha256 = media_objects(supabase_media)[lost.archivo.name]
    del supabase_media.objects[(MEDIA_BUCKET, lost.archivo.name)]
    supabase_media.put(MEDIA_BUCKET, overwritten.archivo.name, b"la radiografia nueva")
    restored = backup_restore_in_place(context=CONTEXT, backup_id=first.pk, confirm="test_restore")
    # then the lost object is back at its name, the replaced one untouched (no upload ever replaces an
    # object), its backup-time bytes beside it, where the restored row now points
    assert restored.status == "completed"
    objects = media_objects(supabase_media)
    assert objects[lost.archivo.name] == lost_sha256
    assert supabase_media.read(MEDIA_BUCKET, overwritten.archivo.name) == b"la radiografia nueva"
    assert all(live_files().values()) and set(live_files().values()) >= set(first.files.values_list("sha256", flat=True))


def test_restore_backup_files_never_replaces_an_object_a_user_stored_at_its_name_meanwhile(
    committed_db, backups_dir, supabase_media, media_files,
):
    # given a backup, then two objects lost from the media bucket
    first_lost, second_lost, *_others = media_files(count=3, size=8 * 1024)
    backup = backup_create(context=CONTEXT)
    saved = dict(backup.files.values_list("path", "sha256"))
    for radiograph in (first_lost, second_lost):
        del supabase_media.objects[(MEDIA_BUCKET, radiograph.archivo.name)]
    # and a user storing a new file at the second name just as the recovery uploads there (found free a moment before)
    supabase_media.taken_before_upload[(MEDIA_BUCKET, second_lost.archivo.name)] = b"la que subio el usuario"
    # when the operator recovers the files from the backup's file list
    outcomes = {}
    result = files_recover(list_key=backup.manifest["files"]["list"]["object"],
                           report=lambda path, outcome: outcomes.__setitem__(path, outcome))
    # then the first is back with its backup-time bytes, the second is a conflict holding the user's bytes,
    # and the recovery left no copy under another name
    assert outcomes[first_lost.archivo.name] == Recovered.WRITTEN
    assert media_objects(supabase_media)[first_lost.archivo.name] == saved[first_lost.archivo.name]
    assert outcomes[second_lost.archivo.name] == Recovered.CONFLICT
    assert supabase_media.read(MEDIA_BUCKET, second_lost.archivo.name) == b"la que subio el usuario"
    assert result.counts[Recovered.CONFLICT] == 1
    assert set(media_objects(supabase_media)) == set(saved)


def test_a_file_missing_from_the_bucket_at_backup_time_is_recorded_missing_and_the_backup_completes(
    committed_db, backups_dir, supabase_media, media_files,
):
    # given a radiograph whose object is gone from the media bucket
    gone, *_others = media_files(count=2, size=4096)
    del supabase_media.objects[(MEDIA_BUCKET, gone.archivo.name)]
    # when the clinic is backed up
    backup = backup_create(context=CONTEXT)
    # then it completes, with that file listed as missing (a blank sha256) and a warning
    assert backup.status == BackupRecord.Status.COMPLETED
    assert backup.files.get(path=gone.archivo.name).sha256 == ""
    assert [warning["code"] for warning in backup.warnings] == ["files_missing"]
