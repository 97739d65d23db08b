"""What the test Supabase Storage server keeps and records, shared by its state and its HTTP handler."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

PREFIX = "/storage/v1/"
CHUNK_SIZE = 64 * 1024
DEFAULT_KEY = "test-service-role-key-0123456789"


@dataclass
class StoredObject:
    """One object as the server keeps it: its bytes in a file, its row in memory."""

    path: Path
    size: int
    content_type: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def read(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class UploadRecord:
    """How one upload request's body arrived."""

    name: str
    content_length: int | None
    chunked: bool
    body_reads: int = 0
    largest_read: int = 0
    bytes_received: int = 0


@dataclass
class DownloadRecord:
    """How one signed download was served."""

    name: str
    writes: int = 0
    largest_write: int = 0
    sent_credentials: bool = False


class _HangUp(Exception):
    """Raised inside a handler to drop the connection without an answer."""
