"""The age format (age-encryption.org/v1) as sealed backup objects use it, through pyrage.

No cryptography is written here: pyrage (the Rust `age` crate) encrypts and decrypts.
What this module adds is what a storage layer needs around it:
- streams in and out (`encrypt_io`/`decrypt_io` read and write 64 KiB chunks, so memory
  stays flat), with an exception raised by the source or destination re-raised as it was
  (pyrage turns one raised while encrypting into its own EncryptError, which would make a
  storage outage look like a programming error);
- the two ways reading fails told apart: no identity opens the header (a key is missing)
  versus a chunk or the header MAC failing authentication (the object was damaged or
  altered);
- the plaintext size of a sealed object from its stored size and header, by the format's
  arithmetic (a 16-byte nonce, then chunks of at most 64 KiB each followed by a 16-byte tag).
Keys are age X25519 identities (`AGE-SECRET-KEY-1…`) and recipients (`age1…`), the ones
`age-keygen` makes; an identity file may hold several, one a line, `#` lines are comments.
pyrage is imported by the functions that use it: a process that seals nothing never loads it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterable

if TYPE_CHECKING:
    from pyrage import x25519

MAGIC = b"age-encryption.org/v1\n"
# The header ends with its MAC line, "--- " and 43 base64 characters. A header of ours holds
# one X25519 stanza per recipient and a grease stanza: well under this many bytes.
HEADER_MAX_BYTES = 16 * 1024
_MAC_LINE = b"\n--- "
_MAC_LENGTH = 43
NONCE_BYTES = 16
CHUNK_BYTES = 64 * 1024
TAG_BYTES = 16
_NO_IDENTITY = "No matching keys found"
_NOT_AUTHENTIC = "decryption error"


class NoIdentityOpens(Exception):
    """None of the identities given opens the object's header."""


class NotAuthentic(Exception):
    """The object is not age, or its header MAC or a chunk fails authentication."""


def identities_parse(text: str) -> list[x25519.Identity]:
    """Every identity of an age identity file (comments and blank lines skipped), or of one line of
    them separated by commas or spaces (an environment variable); ValueError if one is not."""
    import pyrage

    identities = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        for token in line.replace(",", " ").split():
            try:
                identities.append(pyrage.x25519.Identity.from_str(token))
            except pyrage.IdentityError:
                raise ValueError("not an age X25519 identity") from None  # never the token itself: it may be a secret
    return identities


def recipients_parse(values: Iterable[str]) -> list[x25519.Recipient]:
    """age X25519 recipients (`age1…`); ValueError naming the first that is not one."""
    import pyrage

    recipients = []
    for value in values:
        try:
            recipients.append(pyrage.x25519.Recipient.from_str(value.strip()))
        except pyrage.RecipientError as exc:
            raise ValueError(f"not an age X25519 recipient: {value.strip()[:80]!r}") from exc
    return recipients


class _Relay:
    """An encryption's source or destination whose own exceptions are kept, to be re-raised unchanged
    (pyrage's encrypt_io turns them into its EncryptError; its decrypt_io passes them through)."""

    def __init__(self, stream):
        self._stream = stream
        self.raised: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except BaseException as exc:
            self.raised = exc
            raise

    def write(self, data) -> int:
        try:
            return self._stream.write(data)
        except BaseException as exc:
            self.raised = exc
            raise

    def flush(self) -> None:
        flush = getattr(self._stream, "flush", None)
        if flush is not None:
            flush()


def seal(source: BinaryIO, destination: BinaryIO, recipients: list[x25519.Recipient]) -> None:
    """source encrypted to every recipient into destination, streamed."""
    import pyrage

    reader, writer = _Relay(source), _Relay(destination)
    try:
        pyrage.encrypt_io(reader, writer, recipients)
    except Exception:
        failure = reader.raised or writer.raised
        if failure is not None:
            raise failure from None  # the stream's own failure, as it was
        raise
    destination.flush()


def seal_bytes(data: bytes, recipients: list[x25519.Recipient]) -> bytes:
    """A small object encrypted in one call: no Python call per 8 KiB read, as a stream costs."""
    import pyrage

    return pyrage.encrypt(data, recipients)


def _meaning(exc: Exception) -> Exception | None:
    """What a decryption's failure means; None for one that is not pyrage's (the stream's own)."""
    import pyrage

    if isinstance(exc, pyrage.DecryptError):
        return NoIdentityOpens() if _NO_IDENTITY in str(exc) else NotAuthentic(str(exc))
    # decrypt_io reports a chunk failing authentication, or a stream cut short, as a bare OSError.
    if type(exc) is OSError and exc.args == (_NOT_AUTHENTIC,):
        return NotAuthentic(_NOT_AUTHENTIC)
    return None


def unseal(source: BinaryIO, destination: BinaryIO, identities: list[x25519.Identity]) -> None:
    """source decrypted into destination, streamed: NoIdentityOpens or NotAuthentic when it cannot be;
    a failure of source or destination themselves comes out as it was.

    A chunk reaches destination only once it is authenticated, but earlier chunks are
    written before a later one fails: on failure the caller must discard destination."""
    import pyrage

    try:
        pyrage.decrypt_io(source, destination, identities)
    except Exception as exc:
        meaning = _meaning(exc)
        if meaning is None:
            raise
        raise meaning from None
    destination.flush()


def unseal_bytes(data: bytes, identities: list[x25519.Identity]) -> bytes:
    """A small object decrypted in one call (see unseal)."""
    import pyrage

    try:
        return pyrage.decrypt(data, identities)
    except Exception as exc:
        meaning = _meaning(exc)
        if meaning is None:
            raise
        raise meaning from None


def is_sealed(prefix: bytes) -> bool:
    """Whether bytes that start an object are an age file's (its version line)."""
    return prefix.startswith(MAGIC)


def header_length(prefix: bytes) -> int | None:
    """Where the payload starts, from an object's first bytes; None when they hold no whole age header."""
    if not is_sealed(prefix):
        return None
    mac_at = prefix.find(_MAC_LINE)
    end = mac_at + len(_MAC_LINE) + _MAC_LENGTH
    if mac_at < 0 or len(prefix) <= end or prefix[end:end + 1] != b"\n":
        return None
    return end + 1


def plaintext_size(sealed_size: int, header_bytes: int) -> int:
    """The plaintext size of a whole sealed object: its payload less the nonce and one tag per chunk.

    A truncated object gives a smaller size than its plaintext had, which is what a
    caller comparing sizes (a partial upload left by a killed process) needs to see."""
    body = sealed_size - header_bytes - NONCE_BYTES
    if body < TAG_BYTES:
        return 0
    chunks = -(-body // (CHUNK_BYTES + TAG_BYTES))
    return body - chunks * TAG_BYTES


def identity_file_create(path: Path, comment: str) -> tuple[bool, list[str]]:
    """An identity file at path, made now (mode 0600) unless one is there: whether it was made, and
    its public keys. Made under another name and linked into place, so that a process reading
    it never sees it half written, and two making it at once keep one."""
    import pyrage

    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor, draft = tempfile.mkstemp(dir=path.parent, prefix=".identity-")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(f"# {comment}\n{pyrage.x25519.Identity.generate()}\n")
            os.link(draft, path)
            made = True
        except FileExistsError:
            made = False
        finally:
            os.unlink(draft)
    else:
        made = False
    return made, [str(identity.to_public()) for identity in identities_parse(path.read_text())]
