"""A backup's files as one tar archive, produced while it is sent: exact size known up front,
memory bounded whatever the number and size of the files."""
from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from backups.errors import BackupChecksumMismatchError
from backups.models import BackupRecord
from backups.storage.objects import COPY_CHUNK_SIZE


@dataclass(frozen=True)
class TarMember:
    path: str
    sha256: str
    size: int
    mtime: float


def _header(member: TarMember) -> bytes:
    info = tarfile.TarInfo(member.path)
    info.size, info.mtime, info.mode = member.size, member.mtime, 0o644
    # PAX: long and non-ASCII names are kept whole.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> int:
    return -size % tarfile.BLOCKSIZE


def tar_members(*, backup: BackupRecord) -> list[TarMember]:
    fallback = backup.created_at.timestamp()
    return [
        TarMember(path, sha256, size, modified_at.timestamp() if modified_at else fallback)
        for path, sha256, size, modified_at in backup.files.exclude(sha256="").order_by("path")
        .values_list("path", "sha256", "size", "modified_at")
    ]


def tar_size(members: list[TarMember]) -> int:
    """The exact length of tar_stream's output for these members."""
    total = sum(len(_header(m)) + m.size + _padding(m.size) for m in members) + 2 * tarfile.BLOCKSIZE
    return total + (-total % tarfile.RECORDSIZE)


def tar_stream(members: list[TarMember], open_member: Callable[[TarMember], BinaryIO]) -> Iterator[bytes]:
    """A tar archive of the members, as tarfile writes one, produced chunk by chunk.

    tarfile's own writer copies a whole member per call; here only the headers come
    from it, so memory holds one chunk whatever the size of a file. Each member's
    bytes are checked against its size and sha256 as they go: a damaged object ends
    the stream with an error instead of handing out wrong content.
    """
    written = 0
    for member in members:
        header = _header(member)
        yield header
        digest, remaining = hashlib.sha256(), member.size
        with open_member(member) as source:
            while remaining and (chunk := source.read(min(COPY_CHUNK_SIZE, remaining))):
                digest.update(chunk)
                remaining -= len(chunk)
                yield chunk
        if remaining or digest.hexdigest() != member.sha256:
            raise BackupChecksumMismatchError(details={"path": member.path, "expected": member.sha256})
        padding = _padding(member.size)
        yield tarfile.NUL * padding
        written += len(header) + member.size + padding
    end = 2 * tarfile.BLOCKSIZE
    written += end
    yield tarfile.NUL * (end + (-written % tarfile.RECORDSIZE))
