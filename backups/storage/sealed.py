"""The backups storage, sealed: what is written is age-encrypted to its clinic's key, what is read is decrypted.

backups.storage.objects.backup_storage() is this wrapper around STORAGES["backups"]. Callers
keep the names they always used; the storage holds each object under another:
- `<clinic>/…/<name>` (a dump, a file list) as `<clinic>/…/<name>.age`;
- `<clinic>/files/<ab>/<sha256>` (a patient file's content) as `<clinic>/files/<cd>/<hmac>.age`,
  hmac = HMAC-SHA256 of the sha256 under the clinic's names secret (backups.storage.keys): a
  copy of the bucket does not tell whether a clinic holds a known file, while the next backup
  finds the same content under the same name (deduplication stays exact);
- `<clinic>/keys/` is the clinic keys' own folder, never a caller's name.
1. Writing (save): the content is encrypted to the clinic's current key, in memory up to
   SMALL_MAX_BYTES, else as it streams into an anonymous temporary file; then it is stored.
2. Reading (open): the object is decrypted with every key of the clinic, in memory or into an
   anonymous file likewise, before a byte is handed out, so nothing unauthenticated leaves this layer. An altered
   object raises SealedObjectDamagedError, which every caller takes for a checksum mismatch;
   one no key opens because the clinic has no keys left raises ClinicKeyMissingError, taken for
   a missing object.
3. Objects written before sealing (plain, under the caller's name) stay readable: open() falls
   back to them, and an object that starts with age's version line is decrypted wherever it is.
4. exists() and size() answer for the object as it would be written now (sealed, or plain with
   BACKUP_ENCRYPTION=off), size() being the plaintext's, which callers compare with what they
   hold: a backup then trusts only objects sealed like its own, so a content stored plain before
   is stored again, sealed. delete() removes both forms.
When writes are sealed is sealing_on(): BACKUP_ENCRYPTION and the platform's keys.
"""
from __future__ import annotations

import io
import posixpath
import re
from contextlib import suppress
from typing import BinaryIO, Callable, Iterator, TypeVar

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage

from backups.errors import (
    ClinicKeyMissingError,
    EncryptionNotConfiguredError,
    SealedObjectDamagedError,
    StorageNameTakenError,
    StorageObjectMissingError,
)
from backups.storage.age_format import (
    HEADER_MAX_BYTES,
    MAGIC,
    NoIdentityOpens,
    NotAuthentic,
    header_length,
    is_sealed,
    plaintext_size,
    seal,
    seal_bytes,
    unseal,
    unseal_bytes,
)
from backups.storage.keys import (
    KEYS_FOLDER,
    Keyring,
    content_name,
    keyring_for,
    platform_keys_check,
    platform_recipients,
)
from core.files import temporary_file

SUFFIX = ".age"
FORMAT = "age-encryption.org/v1"
# An object up to this size is sealed and opened in memory, in one pyrage call: a radiograph up to
# the file phase's in-memory spool (4 MiB) with its age header and a 16-byte tag per 64 KiB chunk.
# A stream calls back into Python for every 8 KiB, which cost as much as the cryptography itself.
# Larger ones (dumps, big files) stream through an anonymous temporary file: memory stays bounded.
SMALL_MAX_BYTES = 4 * 1024 * 1024 + 128 * 1024
BUFFER_BYTES = 1024 * 1024
T = TypeVar("T")
_CONTENT = re.compile(r"(?P<clinic>[^/]+)/files/[0-9a-f]{2}/(?P<sha256>[0-9a-f]{64})")
_MISSING = (FileNotFoundError, StorageObjectMissingError)


def sealing_on(storage: Storage) -> bool:
    """Whether objects are written sealed: BACKUP_ENCRYPTION on, or auto with the platform's keys
    configured. auto without them keeps the local disk plain and refuses a remote storage: a
    bucket is where a leak happens, so it never receives plain patient data unless told to."""
    mode = str(settings.BACKUP_ENCRYPTION).strip().lower()
    if mode in ("off", "0", "false", "no"):
        return False
    if platform_recipients():
        return True
    if mode == "auto" and isinstance(storage, FileSystemStorage):
        return False
    raise EncryptionNotConfiguredError(details={"setting": "BACKUP_PLATFORM_RECIPIENTS", "BACKUP_ENCRYPTION": mode})


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to look at them), read again from the start;
    closing it closes the stream only when it owns it."""

    def __init__(self, prefix: bytes, rest: BinaryIO, *, owns: bool = True):
        self._prefix, self._rest, self._owns = memoryview(prefix), rest, owns

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count], self._prefix = self._prefix[:count], self._prefix[count:]
            return count
        data = self._rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._owns:
            self._rest.close()
        super().close()


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := stream.read(size - len(data))):
        data += chunk
    return data


class SealedStorage(Storage):
    """STORAGES["backups"] with every object sealed to its clinic's key (see the module's map)."""

    def __init__(self, inner: Storage):
        self.inner = inner

    @property
    def keyring(self) -> Keyring:
        return keyring_for(self.inner)

    # Names

    @staticmethod
    def _clinic(name: str) -> str:
        clinic, separator, rest = name.partition("/")
        if not separator or not clinic or rest.split("/", 1)[0] == KEYS_FOLDER:
            raise SuspiciousFileOperation("A backup object's name starts with its clinic's folder, never its keys'.")
        return clinic

    def _sealed_name(self, name: str) -> str | None:
        """Where the sealed form of name is stored; None for a content of a clinic that has no keys."""
        self._clinic(name)
        content = _CONTENT.fullmatch(name)
        if content is None:
            return name + SUFFIX
        # The clinic's oldest key: its secret names every content, whichever key seals it.
        key = self.keyring.names_key(content["clinic"])
        if key is None:
            return None
        hashed = content_name(key, content["sha256"])
        return f"{content['clinic']}/files/{hashed[:2]}/{hashed}{SUFFIX}"

    def writes_sealed(self) -> bool:
        return sealing_on(self.inner)

    def stored_name(self, name: str) -> str:
        """The name the storage holds name's object under, as it would be written now."""
        if not sealing_on(self.inner):
            return name
        self.keyring.current(self._clinic(name))  # a clinic's first key (and names secret) is made on its first write
        return self._sealed_name(name)

    def sealing_check(self) -> None:
        """Raise now what sealing a backup would raise later: the platform's keys missing or not matching."""
        if sealing_on(self.inner):
            platform_keys_check()

    def sealing(self, clinic: str) -> dict:
        """What a backup's manifest records of how its objects are sealed ({} when plain); reads the clinic's
        keys afresh, so that a backup never seals to a key another process has destroyed or replaced."""
        if not sealing_on(self.inner):
            return {}
        self.keyring.forget(clinic)
        key = self.keyring.current(clinic)
        return {"format": FORMAT, "key_id": key.key_id, "recipient": str(key.recipient)}

    # Writing

    def _save(self, name: str, content) -> str:
        if not sealing_on(self.inner):
            return self.inner.save(name, content)
        key = self.keyring.current(self._clinic(name))
        physical = self._sealed_name(name)
        with suppress(AttributeError, OSError, ValueError):
            content.seek(0)  # as Django's File.chunks() reads a file: from its start
        head = _read_up_to(content, SMALL_MAX_BYTES + 1)
        if len(head) <= SMALL_MAX_BYTES:  # a radiograph, a list: in memory, one call
            return self._store(name, physical, io.BytesIO(seal_bytes(head, [key.recipient])))
        with temporary_file() as sealed:  # a dump: streamed through an anonymous file
            seal(io.BufferedReader(_Prefixed(head, content, owns=False), BUFFER_BYTES), sealed, [key.recipient])
            return self._store(name, physical, sealed)

    def _store(self, name: str, physical: str, sealed: BinaryIO) -> str:
        size = sealed.seek(0, io.SEEK_END)
        sealed.seek(0)
        stored = File(sealed, name=posixpath.basename(physical))
        stored.size = size
        saved = self.inner.save(physical, stored)
        if saved != physical:
            self.inner.delete(saved)
            raise StorageNameTakenError(details={"operation": "upload", "object": physical})
        return name

    def get_available_name(self, name, max_length=None):
        # A taken name is the caller's to handle (storage_save_exactly): no random suffix after a sealed name.
        return name

    # Reading

    def _forms(self, name: str) -> Iterator[tuple[str, bool]]:
        """(stored name, sealed?) of name's two forms, the one written now first. Reading needs no
        configured keys: plain objects of a storage that refuses plain writes are still read."""
        try:
            sealed_first = sealing_on(self.inner)
        except EncryptionNotConfiguredError:
            sealed_first = False
        plain = (name, False)
        if not sealed_first:
            yield plain
        sealed = self._sealed_name(name)
        if sealed is not None:
            yield sealed, True
        if sealed_first:
            yield plain

    def _open(self, name: str, mode: str = "rb") -> File:
        for stored, sealed in self._forms(name):
            try:
                source = self.inner.open(stored, "rb")
            except _MISSING:
                continue
            return self._opened(name, stored, sealed, source)
        raise FileNotFoundError(name)

    def _opened(self, name: str, stored: str, sealed: bool, source) -> File:
        magic = _read_up_to(source, len(MAGIC))
        if not is_sealed(magic):
            if sealed:
                source.close()
                raise SealedObjectDamagedError(details={"object": stored, "reason": "not_age"})
            return self._plain(name, magic, source)
        head = magic + _read_up_to(source, SMALL_MAX_BYTES + 1 - len(magic))
        if len(head) <= SMALL_MAX_BYTES:  # in memory, decrypted in one call
            source.close()
            plaintext = self._with_keys(name, stored, lambda identities: unseal_bytes(head, identities))
            opened = File(io.BytesIO(plaintext), name=name)
            opened.size = len(plaintext)
            return opened
        return self._opened_large(name, stored, io.BufferedReader(_Prefixed(head, source), BUFFER_BYTES))

    def _opened_large(self, name: str, stored: str, first: BinaryIO) -> File:
        """A large object decrypted into an anonymous file, then handed out from its start."""
        spool = temporary_file()
        readers = [first]

        def attempt(identities) -> None:
            # A second attempt (with keys read afresh) reads the object again from the storage.
            reader = readers.pop() if readers else self.inner.open(stored, "rb")
            spool.seek(0)
            spool.truncate()
            with reader:
                unseal(reader, spool, identities)

        try:
            self._with_keys(name, stored, attempt)
            opened = File(spool, name=name)
            opened.size = spool.tell()
            spool.seek(0)
            return opened
        except BaseException:
            for reader in readers:
                reader.close()
            spool.close()
            raise

    @staticmethod
    def _plain(name: str, prefix: bytes, source: File) -> File:
        """An object written before sealing, as the backend opened it (from its start again)."""
        if source.seekable():
            source.seek(0)
            return source
        opened = File(io.BufferedReader(_Prefixed(prefix, source)), name=name)
        with suppress(AttributeError, OSError, ValueError, TypeError):
            opened.size = source.size
        return opened

    def _with_keys(self, name: str, stored: str, attempt: Callable[[list], T]) -> T:
        """attempt(identities) with the clinic's keys; once more with them read afresh when none opened
        the object (a key made by another process since). Its failures as the storage's errors."""
        clinic = self._clinic(name)
        keys = self.keyring.keys(clinic)
        for again in (False, True):
            try:
                return attempt([key.identity for key in keys])
            except NotAuthentic as exc:
                raise SealedObjectDamagedError(details={"object": stored, "reason": str(exc)}) from None
            except NoIdentityOpens:
                fresh = [] if again else self.keyring.keys(clinic, fresh=True)
                if again or [key.key_id for key in fresh] == [key.key_id for key in keys]:
                    break
                keys = fresh
        if not keys:
            raise ClinicKeyMissingError(details={"object": stored, "clinic": clinic})
        # The clinic has keys and none opens it: its header was altered, or it is not the clinic's.
        raise SealedObjectDamagedError(details={"object": stored, "reason": "no_key_opens"})

    # What is there

    def exists(self, name: str) -> bool:
        if not sealing_on(self.inner):
            return self.inner.exists(name)
        stored = self._sealed_name(name)
        return stored is not None and self.inner.exists(stored)

    def size(self, name: str) -> int:
        if not sealing_on(self.inner):
            return self.inner.size(name)
        stored = self._sealed_name(name)
        if stored is None:
            raise FileNotFoundError(name)
        with self.inner.open(stored, "rb") as source:
            header = header_length(_read_up_to(source, HEADER_MAX_BYTES))
        if header is None:
            return -1  # not even a whole header (an upload cut short): no size any content has
        return plaintext_size(self.inner.size(stored), header)

    def delete(self, name: str) -> None:
        self.inner.delete(name)
        stored = self._sealed_name(name)
        if stored is not None:
            self.inner.delete(stored)

    def listdir(self, path: str):
        """The stored names (sealed ones as they are stored)."""
        return self.inner.listdir(path)

    def get_modified_time(self, name: str):
        for stored, _sealed in self._forms(name):
            with suppress(*_MISSING):
                return self.inner.get_modified_time(stored)
        raise FileNotFoundError(name)
