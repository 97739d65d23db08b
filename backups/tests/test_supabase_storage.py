"""SupabaseStorage over real HTTP against the local Supabase Storage server of supabase_server.py."""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
import tracemalloc
from contextlib import contextmanager
from datetime import datetime

import pytest
from django.core.files.base import ContentFile, File
from django.http import FileResponse

from backups.errors import (
    StorageBucketMissingError,
    StorageError,
    StorageObjectExistsError,
    StorageObjectMissingError,
    StoragePayloadTooLargeError,
    StorageUnauthorizedError,
    StorageUnavailableError,
)
from backups.storage.supabase import SupabaseStorage

MIB = 1024 * 1024
# Whole-object buffering would show as a peak of at least the object's size (8 MiB
# here); streaming stays under 1 MiB, plus one-time costs such as mimetypes' tables.
MEMORY_BOUND = 2 * MIB


@contextmanager
def traced_peak():
    """Measure the peak of Python allocations (every thread, server included) inside the block."""
    result = {}
    tracemalloc.start()
    try:
        yield result
    finally:
        result["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def warm_up(storage: SupabaseStorage) -> None:
    """Create the client before measuring: its TLS context costs a few MiB once per process."""
    storage.exists("warm-up")


def write_random_file(path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_save_streams_a_multi_megabyte_file_from_disk(supabase_server, supabase_storage, tmp_path):
    # Real server: multipart POST /object/{bucket}/{path}; storage3 streams an open file.
    # given
    source = tmp_path / "dump.sql.gz"
    data = write_random_file(source, 8 * MIB)
    warm_up(supabase_storage)
    # when
    with source.open("rb") as stream, traced_peak() as memory:
        name = supabase_storage.save("test_a/manual/backup.sql.gz", File(stream))
    # then
    assert name == "test_a/manual/backup.sql.gz"
    assert supabase_server.read("backups", name) == data
    assert memory["peak"] < MEMORY_BOUND
    upload = supabase_server.uploads[-1]
    assert upload.content_length is not None and upload.content_length > len(data)  # sized from the file, not buffered
    assert upload.body_reads > 100
    assert supabase_server.objects[("backups", name)].content_type == "application/gzip"


def test_save_streams_a_file_object_that_is_not_a_plain_reader(supabase_server, supabase_storage):
    # Real server: same upload; storage3 would take a non-BufferedReader file for a path to open.
    # given
    data = os.urandom(8 * MIB)
    warm_up(supabase_storage)
    with tempfile.TemporaryFile() as spooled:
        spooled.write(data)
        spooled.seek(0)
        # when
        with traced_peak() as memory:
            name = supabase_storage.save("test_a/automatic/backup.sql.gz", File(spooled))
    # then
    assert supabase_server.read("backups", name) == data
    assert memory["peak"] < MEMORY_BOUND
    assert supabase_server.uploads[-1].content_length is not None


@pytest.mark.parametrize(
    ("content", "expected"),
    [(ContentFile(b"\x1f\x8b binary"), b"\x1f\x8b binary"), (ContentFile("texto ñ"), "texto ñ".encode())],
    ids=["bytes", "text"],
)
def test_save_accepts_in_memory_content(supabase_server, supabase_storage, content, expected):
    # Real server: same upload; text content is encoded as it is sent (chunked, length unknown).
    # when
    name = supabase_storage.save("test_a/small.json", content)
    # then
    assert supabase_server.read("backups", name) == expected


def test_open_streams_the_download_through_a_short_lived_signed_url(supabase_server, supabase_storage):
    # Real server: POST /object/sign/{bucket}/{path} then GET of the signed URL, no key needed.
    # given
    data = os.urandom(6 * MIB)
    supabase_server.put("backups", "test_a/manual/backup.sql.gz", data)
    # when
    opened = supabase_storage.open("test_a/manual/backup.sql.gz")
    digest, reads = hashlib.sha256(), []
    with opened:
        while chunk := opened.read(100_000):
            reads.append(len(chunk))
            digest.update(chunk)
    # then
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert opened.size == len(data)
    assert max(reads) <= 100_000 and len(reads) > 50
    download = supabase_server.downloads[-1]
    assert download.writes > 50 and not download.sent_credentials
    assert supabase_server.signed_urls[-1]["expires_in"] <= 60


def test_file_response_streams_the_download_with_bounded_memory(supabase_server, supabase_storage):
    # Real server: the signed GET answers with Content-Length and the bytes in order.
    # given
    data = os.urandom(8 * MIB)
    supabase_server.put("backups", "test_a/manual/big.sql.gz", data)
    warm_up(supabase_storage)
    digest = hashlib.sha256()
    # when
    with traced_peak() as memory:
        response = FileResponse(supabase_storage.open("test_a/manual/big.sql.gz"), as_attachment=True)
        for chunk in response:
            digest.update(chunk)
        response.close()
    # then
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert memory["peak"] < MEMORY_BOUND


def test_reading_fails_as_unavailable_when_the_server_hangs_up_mid_download(supabase_server, supabase_storage):
    # Real server gone mid-response: fewer bytes than Content-Length, then a closed socket.
    # given
    supabase_server.put("backups", "test_a/cut.sql.gz", os.urandom(2 * MIB))
    supabase_server.fail_download_after = 300_000
    opened = supabase_storage.open("test_a/cut.sql.gz")
    # when / then
    with pytest.raises(StorageUnavailableError), opened:
        while opened.read(64 * 1024):
            pass


def test_delete_removes_the_object(supabase_server, supabase_storage):
    # Real server: DELETE /object/{bucket} with {"prefixes": [...]} answers the removed rows.
    # given
    supabase_server.put("backups", "test_a/old.sql.gz", b"old")
    # when
    supabase_storage.delete("test_a/old.sql.gz")
    # then
    assert not supabase_server.has("backups", "test_a/old.sql.gz")
    assert not supabase_storage.exists("test_a/old.sql.gz")


def test_delete_of_a_missing_object_or_bucket_is_a_no_op(supabase_server, supabase_storage, supabase_storage_for):
    # Real server: DELETE of unknown prefixes answers 200 with [], not an error.
    # given
    supabase_server.create_bucket("backups")
    # when
    supabase_storage.delete("test_a/never-there.sql.gz")
    supabase_storage_for(bucket="no-such-bucket").delete("test_a/never-there.sql.gz")
    # then
    assert supabase_server.objects == {}


def test_exists_and_size_report_the_stored_object(supabase_server, supabase_storage):
    # Real server: GET /object/info/{bucket}/{path} answers the row with its size in bytes.
    # given
    supabase_server.put("backups", "test_a/manual/backup.sql.gz", b"x" * 12345)
    # when / then
    assert supabase_storage.exists("test_a/manual/backup.sql.gz")
    assert supabase_storage.size("test_a/manual/backup.sql.gz") == 12345
    assert not supabase_storage.exists("test_a/manual/other.sql.gz")


def test_exists_is_false_while_the_bucket_does_not_exist(supabase_storage):
    # Real server: info in a missing bucket answers 404 "Bucket not found" in the body.
    # when / then
    assert supabase_storage.exists("test_a/manual/backup.sql.gz") is False


def test_open_and_size_of_a_missing_object_raise_object_missing(supabase_server, supabase_storage):
    # Real server: HTTP 400 with {"statusCode": "404", "error": "not_found", "message": "Object not found"}.
    # given
    supabase_server.create_bucket("backups")
    # when / then
    with pytest.raises(StorageObjectMissingError) as opened:
        supabase_storage.open("test_a/gone.sql.gz")
    with pytest.raises(StorageObjectMissingError):
        supabase_storage.size("test_a/gone.sql.gz")
    assert opened.value.details["status"] == "404"
    assert opened.value.details["name"] == "test_a/gone.sql.gz"


def test_a_missing_object_is_file_not_found_as_djangos_storage_api_has_it(supabase_server, supabase_storage):
    # given
    supabase_server.create_bucket("backups")
    # when / then: code written to Django's Storage API (a backup finding a patient file gone) needs no other case
    for read in (supabase_storage.open, supabase_storage.size, supabase_storage.get_modified_time):
        with pytest.raises(FileNotFoundError):
            read("test_a/radiografias/gone.png")


def test_modified_time_is_the_objects_own_and_unsupported_where_the_server_gives_none(supabase_server, supabase_storage):
    # Real server: the object's info carries `last_modified` (its row's updated_at).
    # given
    supabase_server.put("backups", "test_a/radiografias/rx.png", b"radiografia")
    # when / then: an aware time, the server's
    stored_at = datetime.fromisoformat(supabase_server.objects[("backups", "test_a/radiografias/rx.png")].created_at)
    assert supabase_storage.get_modified_time("test_a/radiografias/rx.png") == stored_at
    # given an object stored again at that name, then its time is the new one, with its size from the same answer
    supabase_server.put("backups", "test_a/radiografias/rx.png", b"otra radiografia")
    assert supabase_storage.get_modified_time("test_a/radiografias/rx.png") > stored_at
    requests = len(supabase_server.requests)
    size, modified = supabase_storage.size_and_modified_time("test_a/radiografias/rx.png")
    assert (size, modified > stored_at, len(supabase_server.requests) - requests) == (16, True, 1)
    # given a server whose info gives no time, then it is unsupported (a backup then reads every file)
    supabase_server.info_omits.add("last_modified")
    with pytest.raises(NotImplementedError):
        supabase_storage.get_modified_time("test_a/radiografias/rx.png")
    assert supabase_storage.size_and_modified_time("test_a/radiografias/rx.png") == (16, None)


def test_open_in_a_missing_bucket_raises_bucket_missing(supabase_storage):
    # Real server: HTTP 400 with {"statusCode": "404", "error": "Bucket not found", ...}.
    # when / then
    with pytest.raises(StorageBucketMissingError):
        supabase_storage.open("test_a/manual/backup.sql.gz")


def test_raw_save_of_an_existing_name_raises_object_exists(supabase_server, supabase_storage):
    # Real server: POST without x-upsert on a taken key → HTTP 400 with {"statusCode": "409", "error": "Duplicate"}.
    # given
    supabase_server.put("backups", "test_a/manual/backup.sql.gz", b"first")
    # when / then
    with pytest.raises(StorageObjectExistsError) as raised:
        supabase_storage._save("test_a/manual/backup.sql.gz", ContentFile(b"second"))
    assert raised.value.details["status"] == "409"
    assert supabase_server.read("backups", "test_a/manual/backup.sql.gz") == b"first"


def test_save_picks_another_name_when_the_name_is_taken(supabase_server, supabase_storage):
    # Real server: the same duplicate rule; Django's get_available_name asks exists() first.
    # given
    supabase_server.put("backups", "test_a/manual/backup.sql.gz", b"first")
    # when
    name = supabase_storage.save("test_a/manual/backup.sql.gz", ContentFile(b"second"))
    # then
    assert name != "test_a/manual/backup.sql.gz"
    assert name.startswith("test_a/manual/backup_") and name.endswith(".sql.gz")
    assert supabase_server.read("backups", name) == b"second"
    assert supabase_server.read("backups", "test_a/manual/backup.sql.gz") == b"first"


def test_a_wrong_key_is_unauthorized_and_never_echoed(supabase_server, supabase_storage_for):
    # Real API gateway: a wrong apikey gets a plain HTTP 401 {"message": "Invalid API key"}.
    # given
    wrong_key = "wrong-secret-key-that-must-not-leak"
    storage = supabase_storage_for(key=wrong_key)
    # when / then
    for attempt in (
        lambda: storage.save("test_a/x.sql.gz", ContentFile(b"x")),
        lambda: storage._save("test_a/x.sql.gz", ContentFile(b"x")),
        lambda: storage.open("test_a/x.sql.gz"),
        lambda: storage.exists("test_a/x.sql.gz"),
    ):
        with pytest.raises(StorageUnauthorizedError) as raised:
            attempt()
        assert raised.value.details["status"] == "401"
        assert wrong_key not in repr(raised.value.details) and wrong_key not in str(raised.value)
    assert supabase_server.objects == {}


def test_a_wrong_jwt_is_unauthorized_at_the_storage_server(supabase_server, supabase_storage_for):
    # Real storage server without the gateway: AccessDenied → HTTP 400 with {"statusCode": "403", "error": "Unauthorized"};
    # its info route takes the bad JWT for an anonymous caller, who sees no private bucket.
    # given
    supabase_server.gateway = False
    supabase_server.put("backups", "test_a/x.sql.gz", b"x")
    storage = supabase_storage_for(key="not-the-service-role-jwt")
    # when / then
    with pytest.raises(StorageUnauthorizedError):
        storage._save("test_a/y.sql.gz", ContentFile(b"y"))
    with pytest.raises(StorageUnauthorizedError):
        storage.open("test_a/x.sql.gz")
    assert storage.exists("test_a/x.sql.gz") is False


def test_the_bucket_is_created_private_on_the_first_save(supabase_server, supabase_storage):
    # Real server: POST /bucket {"id", "name", "public": false}; a second create answers 409 Duplicate.
    # given
    assert supabase_server.buckets == {}
    # when
    supabase_storage.save("test_a/one.sql.gz", ContentFile(b"1"))
    supabase_storage.save("test_a/two.sql.gz", ContentFile(b"2"))
    # then
    assert supabase_server.buckets["backups"]["public"] is False
    assert supabase_server.read("backups", "test_a/two.sql.gz") == b"2"
    assert supabase_server.requests.count(("POST", "/storage/v1/bucket")) == 1


def test_an_existing_bucket_is_used_as_it_is(supabase_server, supabase_storage):
    # Real server: creating a bucket that exists answers HTTP 400 with {"statusCode": "409", "error": "Duplicate"}.
    # given
    supabase_server.create_bucket("backups")
    supabase_server.put("backups", "test_a/kept.sql.gz", b"kept")
    # when
    supabase_storage.save("test_a/new.sql.gz", ContentFile(b"new"))
    # then
    assert supabase_server.read("backups", "test_a/new.sql.gz") == b"new"
    assert supabase_server.read("backups", "test_a/kept.sql.gz") == b"kept"


def test_an_object_over_the_size_limit_raises_payload_too_large(supabase_server, supabase_storage):
    # Real server: HTTP 400 with {"statusCode": "413", "error": "Payload too large"} once the body is counted.
    # given
    supabase_server.max_object_size = 1 * MIB
    # when / then
    with pytest.raises(StoragePayloadTooLargeError):
        supabase_storage.save("test_a/huge.sql.gz", ContentFile(os.urandom(2 * MIB)))
    assert not supabase_server.has("backups", "test_a/huge.sql.gz")


def test_a_server_that_is_down_raises_unavailable(supabase_server, supabase_storage):
    # Real outage: nothing listens on the port, connections are refused.
    # given
    supabase_server.stop()
    # when / then
    for attempt in (
        lambda: supabase_storage.save("test_a/x.sql.gz", ContentFile(b"x")),
        lambda: supabase_storage.open("test_a/x.sql.gz"),
        lambda: supabase_storage.exists("test_a/x.sql.gz"),
        lambda: supabase_storage.size("test_a/x.sql.gz"),
        lambda: supabase_storage.delete("test_a/x.sql.gz"),
    ):
        with pytest.raises(StorageUnavailableError) as raised:
            attempt()
        assert supabase_server.key not in repr(raised.value.details)


def test_an_unreachable_url_raises_unavailable(supabase_storage_for, down_url):
    # Real misconfiguration or outage: a URL whose port is closed.
    # given
    storage = supabase_storage_for(url=down_url)
    # when / then
    with pytest.raises(StorageUnavailableError) as raised:
        storage.save("test_a/x.sql.gz", ContentFile(b"x"))
    assert raised.value.details["operation"] == "exists"


def test_a_server_dying_mid_upload_raises_and_leaves_no_object(supabase_server, supabase_storage, tmp_path):
    # Real server crash mid-request: the socket closes with no answer; a partial upload is never committed.
    # given
    source = tmp_path / "dump.sql.gz"
    write_random_file(source, 4 * MIB)
    supabase_server.fail_upload_after = 1 * MIB
    # when / then
    with source.open("rb") as stream, pytest.raises(StorageError):
        supabase_storage.save("test_a/manual/backup.sql.gz", File(stream))
    assert supabase_server.objects == {}
    assert not any(supabase_server.directory.glob("object-*"))


def test_names_with_spaces_and_percent_signs_round_trip(supabase_server, supabase_storage):
    # Real server: object keys arrive percent-encoded in the path and are stored decoded.
    # given
    name = "test_a/manual/copia 100%25 ñ.sql.gz"
    # when
    saved = supabase_storage.save(name, ContentFile(b"data"))
    # then
    assert saved == name
    assert supabase_server.read("backups", name) == b"data"
    assert supabase_storage.size(name) == 4
    with supabase_storage.open(name) as opened:
        assert opened.read() == b"data"


def test_the_client_is_created_on_first_use_not_on_construction(down_url):
    # Real deployment: settings build the storage at import, when the network may not be there.
    # when
    storage = SupabaseStorage(url=down_url, key="k", bucket="backups")
    # then
    assert storage._client is None
    assert storage.deconstruct()[2] == {"url": down_url, "key": "k", "bucket": "backups"}


def test_only_binary_reading_is_supported(supabase_storage):
    # Not a server behaviour: objects are written through save(), never through open(mode="wb").
    # when / then
    with pytest.raises(ValueError):
        supabase_storage.open("test_a/x.sql.gz", mode="wb")


def test_a_stream_of_unknown_length_is_uploaded_chunked(supabase_server, supabase_storage):
    # Real server: accepts a chunked multipart body when the length is unknown up front.
    # given
    class Unsized(io.RawIOBase):
        def __init__(self, data: bytes):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self._data.readinto(buffer)

    # when
    name = supabase_storage.save("test_a/piped.sql.gz", File(Unsized(b"piped" * 1000), name="piped"))
    # then
    assert supabase_server.read("backups", name) == b"piped" * 1000
    assert supabase_server.uploads[-1].chunked
