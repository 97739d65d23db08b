"""Clinic keys: one age X25519 identity per clinic, stored beside its backups, wrapped to the platform's recipients.

Where each key lives (in the backups storage itself, never through the sealed layer):
    <clinic>/keys/<key-id>.<wrap>.age
- key-id: `<UTC time to the microsecond>Z-<6 hex>`, so names sort in the order keys were
  made; the newest seals new objects, every one of them opens what it sealed.
- wrap: 16 hex of the sha256 of the platform recipients the object is encrypted to. A
  rewrap (keys_rewrap) writes the key under the new wrap, then deletes the old one: a key
  is never absent, and a rewrap cut short is finished by running it again.
- content, decrypted with the platform identity, is an age identity file that
  `age -d -i` takes as it is:
      # clinica_demo: clave de backups (age X25519)
      # key-id: 20261127T030000123456Z-3fa9c1
      # public key: age1…
      # file-names: <64 hex>
      AGE-SECRET-KEY-1…
  `file-names` is the clinic's secret for naming file objects (backups.storage.sealed:
  an HMAC-SHA256 of the content's sha256), copied from key to key when the clinic's key is
  rotated (keys_rotate) so that a content keeps its one name; it goes with the keys.
Nothing else holds a clinic key: not the database, not a temporary file. A process keeps the
keys it read for BACKUP_KEY_CACHE_SECONDS (Keyring). Deleting every key object of a clinic
(keys_shred) leaves nothing the platform identity can open that opens the clinic's objects.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage

from backups.errors import EncryptionNotConfiguredError, KeysShredIncompleteError, PlatformKeyError
from backups.storage.age_format import identities_parse, recipients_parse

if TYPE_CHECKING:
    from pyrage import x25519  # pyrage itself loads where a key is used (as in age_format)

KEYS_FOLDER = "keys"
_KEY_NAME = re.compile(r"(?P<key_id>\d{8}T\d{12}Z-[0-9a-f]{6})\.(?P<wrap>[0-9a-f]{16})\.age")
_NAMES_LINE = "# file-names: "
KEY_OBJECT_MAX_BYTES = 64 * 1024


# The platform's keys, from settings


def _identity_text() -> str:
    if settings.BACKUP_PLATFORM_IDENTITY:
        return settings.BACKUP_PLATFORM_IDENTITY
    path = settings.BACKUP_PLATFORM_IDENTITY_FILE
    try:
        stat = Path(path).stat() if path else None
    except FileNotFoundError:
        stat = None
    return _file_text(str(path), stat.st_mtime_ns, stat.st_size) if stat else ""


@lru_cache(maxsize=4)
def _file_text(path: str, _mtime_ns: int, _size: int) -> str:
    # Read again only when the file changes (its time and size are part of the cache key).
    return Path(path).read_text()


@lru_cache(maxsize=8)
def _identities(text: str) -> tuple[x25519.Identity, ...]:
    try:
        return tuple(identities_parse(text))
    except ValueError:
        raise PlatformKeyError(details={"setting": "BACKUP_PLATFORM_IDENTITY"}) from None


@lru_cache(maxsize=8)
def _recipients(values: tuple[str, ...]) -> tuple[x25519.Recipient, ...]:
    try:
        return tuple(recipients_parse(values))
    except ValueError as exc:
        raise PlatformKeyError(details={"setting": "BACKUP_PLATFORM_RECIPIENTS", "error": str(exc)}) from None


def platform_identities() -> tuple[x25519.Identity, ...]:
    """The platform's identities (they open clinic keys); () when none is configured."""
    return _identities(_identity_text())


def platform_recipients() -> tuple[x25519.Recipient, ...]:
    """Who every clinic key is wrapped to: BACKUP_PLATFORM_RECIPIENTS, else the identities' public keys."""
    configured = tuple(value for value in settings.BACKUP_PLATFORM_RECIPIENTS if value.strip())
    if configured:
        return _recipients(configured)
    return tuple(identity.to_public() for identity in platform_identities())


def platform_wrap(recipients: tuple[x25519.Recipient, ...]) -> str:
    return hashlib.sha256("\n".join(sorted(str(r) for r in recipients)).encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _opens_own_wraps(identities: tuple[x25519.Identity, ...], recipients: tuple[x25519.Recipient, ...]) -> bool:
    import pyrage

    return pyrage.decrypt(pyrage.encrypt(b"probe", list(recipients)), list(identities)) == b"probe"


def platform_keys_check() -> tuple[tuple[x25519.Identity, ...], tuple[x25519.Recipient, ...]]:
    """The platform's identities and recipients, when a key wrapped to those recipients opens with
    those identities: else a key written now could never be read again."""
    import pyrage

    recipients, identities = platform_recipients(), platform_identities()
    if not recipients or not identities:
        missing = "BACKUP_PLATFORM_RECIPIENTS" if not recipients else "BACKUP_PLATFORM_IDENTITY"
        raise EncryptionNotConfiguredError(details={"setting": missing})
    try:
        opens = _opens_own_wraps(identities, recipients)
    except pyrage.DecryptError:
        opens = False
    if not opens:
        raise PlatformKeyError(details={"setting": "BACKUP_PLATFORM_IDENTITY", "reason": "opens_no_recipient"})
    return identities, recipients


# One clinic's keys


@dataclass(frozen=True)
class ClinicKey:
    key_id: str
    identity: x25519.Identity
    names_secret: bytes

    @property
    def recipient(self) -> x25519.Recipient:
        return self.identity.to_public()

    def as_text(self, clinic: str) -> str:
        return (f"# {clinic}: clave de backups (age X25519)\n# key-id: {self.key_id}\n"
                f"# public key: {self.recipient}\n{_NAMES_LINE}{self.names_secret.hex()}\n{self.identity}\n")

    @classmethod
    def from_text(cls, key_id: str, text: str) -> ClinicKey:
        names = [line[len(_NAMES_LINE):].strip() for line in text.splitlines() if line.startswith(_NAMES_LINE)]
        identities = identities_parse(text)
        if len(identities) != 1 or len(names) != 1:
            raise ValueError("not a clinic key")
        return cls(key_id, identities[0], bytes.fromhex(names[0]))


def content_name(key: ClinicKey, sha256: str) -> str:
    """A content's name in its clinic's folder: nobody without the clinic's keys can tell which content it is."""
    return hmac.new(key.names_secret, sha256.encode(), hashlib.sha256).hexdigest()


def keys_folder(clinic: str) -> str:
    return f"{clinic}/{KEYS_FOLDER}"


def _key_objects(storage: Storage, clinic: str) -> list[str]:
    """Every object in the clinic's keys folder, whatever its name."""
    try:
        return sorted(storage.listdir(keys_folder(clinic))[1])
    except FileNotFoundError:
        return []


def _wraps(storage: Storage, clinic: str) -> dict[str, list[tuple[str, str]]]:
    """key-id → [(wrap, object name)], key-ids newest first."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name in _key_objects(storage, clinic):
        if match := _KEY_NAME.fullmatch(name):
            found.setdefault(match["key_id"], []).append((match["wrap"], f"{keys_folder(clinic)}/{name}"))
    return dict(sorted(found.items(), reverse=True))


def _unwrap(storage: Storage, name: str, identities) -> str | None:
    """A key object's text, or None when no platform identity opens it."""
    import pyrage

    with storage.open(name, "rb") as stored:
        wrapped = stored.read(KEY_OBJECT_MAX_BYTES)
    try:
        return pyrage.decrypt(wrapped, list(identities)).decode()
    except pyrage.DecryptError:
        return None


def _key_read(storage: Storage, clinic: str, key_id: str, wraps: list[tuple[str, str]]) -> ClinicKey:
    """One key, from the first of its wraps the platform opens."""
    identities = platform_identities()
    if not identities:
        raise EncryptionNotConfiguredError(details={"setting": "BACKUP_PLATFORM_IDENTITY"})
    for _wrap, name in wraps:
        text = _unwrap(storage, name, identities)
        if text is not None:
            try:
                return ClinicKey.from_text(key_id, text)
            except ValueError:
                continue
    raise PlatformKeyError(details={"clinic": clinic, "key_id": key_id, "reason": "no_wrap_opens"})


def _key_store(storage: Storage, clinic: str, key: ClinicKey) -> None:
    import pyrage

    _identities_, recipients = platform_keys_check()
    name = f"{keys_folder(clinic)}/{key.key_id}.{platform_wrap(recipients)}.age"
    saved = storage.save(name, ContentFile(pyrage.encrypt(key.as_text(clinic).encode(), list(recipients))))
    if saved != name:
        storage.delete(saved)
        raise PlatformKeyError(details={"clinic": clinic, "key_id": key.key_id, "reason": "name_taken"})


def _key_new(names_secret: bytes | None = None) -> ClinicKey:
    import pyrage

    key_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(3)}"
    return ClinicKey(key_id, pyrage.x25519.Identity.generate(), names_secret or secrets.token_bytes(32))


class Keyring:
    """One storage's clinic keys as this process last read them (at most BACKUP_KEY_CACHE_SECONDS ago)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._lock = threading.RLock()
        self._read: dict[str, tuple[float, list[ClinicKey]]] = {}

    def keys(self, clinic: str, *, fresh: bool = False) -> list[ClinicKey]:
        """The clinic's keys, newest first; [] when it has none."""
        with self._lock:
            read = self._read.get(clinic)
            if fresh or read is None or time.monotonic() - read[0] > settings.BACKUP_KEY_CACHE_SECONDS:
                read = (time.monotonic(), [_key_read(self.storage, clinic, key_id, wraps)
                                           for key_id, wraps in _wraps(self.storage, clinic).items()])
                self._read[clinic] = read
            return read[1]

    def current(self, clinic: str) -> ClinicKey:
        """The key that seals the clinic's new objects: its newest, made now when it has none."""
        with self._lock:
            keys = self.keys(clinic)
            if keys:
                return keys[0]
            keys = self.keys(clinic, fresh=True)  # another process may have made the first one since
            if not keys:
                _key_store(self.storage, clinic, _key_new())
                keys = self.keys(clinic, fresh=True)
            return keys[0]

    def names_key(self, clinic: str) -> ClinicKey | None:
        """The key whose names secret names the clinic's contents: its oldest (all carry the same)."""
        keys = self.keys(clinic)
        return keys[-1] if keys else None

    def forget(self, clinic: str) -> None:
        with self._lock:
            self._read.pop(clinic, None)


_KEYRINGS: WeakKeyDictionary[Storage, Keyring] = WeakKeyDictionary()
_KEYRINGS_LOCK = threading.Lock()


def keyring_for(storage: Storage) -> Keyring:
    """The keyring of one storage instance (settings that change the storage give a new one)."""
    with _KEYRINGS_LOCK:
        keyring = _KEYRINGS.get(storage)
        if keyring is None:
            keyring = _KEYRINGS[storage] = Keyring(storage)
        return keyring


# Rotation and destruction


def keys_rotate(storage: Storage, clinic: str) -> ClinicKey:
    """A new key for the clinic, which seals its new objects; the older ones still open what they sealed."""
    keyring = keyring_for(storage)
    with keyring._lock:
        keys = keyring.keys(clinic, fresh=True)
        key = _key_new(keys[-1].names_secret if keys else None)
        _key_store(storage, clinic, key)
        keyring.forget(clinic)
    return key


def keys_rewrap(storage: Storage, clinic: str) -> int:
    """Every key of the clinic wrapped to the platform's current recipients, none re-encrypting data;
    how many were rewrapped. The new wrap is stored before the old one is deleted."""
    _identities_, recipients = platform_keys_check()
    wrap = platform_wrap(recipients)
    rewrapped = 0
    for key_id, wraps in _wraps(storage, clinic).items():
        if not any(existing == wrap for existing, _name in wraps):
            _key_store(storage, clinic, _key_read(storage, clinic, key_id, wraps))
            rewrapped += 1
        for existing, name in wraps:
            if existing != wrap:
                storage.delete(name)
    keyring_for(storage).forget(clinic)
    return rewrapped


def keys_shred(storage: Storage, clinic: str) -> int:
    """Delete every object in the clinic's keys folder, then read the folder back: KeysShredIncompleteError
    if any is still there. How many were deleted."""
    names = [f"{keys_folder(clinic)}/{name}" for name in _key_objects(storage, clinic)]
    failures = 0
    for name in names:
        try:
            storage.delete(name)
        except Exception:  # noqa: BLE001 - counted, then the read-back decides
            failures += 1
    keyring_for(storage).forget(clinic)
    left = [name for name in names if storage.exists(name)] + [
        f"{keys_folder(clinic)}/{name}" for name in _key_objects(storage, clinic)
        if f"{keys_folder(clinic)}/{name}" not in names
    ]
    if left or failures:
        raise KeysShredIncompleteError(details={"clinic": clinic, "keys": len(names), "left": len(left),
                                                "errors": failures})
    return len(names)
