import io
import json

import pytest
from django.db import connection

from backup_restore import utils
from backup_restore.classification import Policy


def export_bytes(schema_name: str = "test_a") -> bytes:
    return b"".join(utils.tenant_data_export_chunks(schema_name=schema_name, tenant_name=schema_name))


def restorable_snapshot() -> dict[str, list[tuple]]:
    """Every restorable table, row by row, in primary-key order (values as PostgreSQL stores them)."""
    snapshot = {}
    with connection.cursor() as cursor:
        for plan in utils.models_plan():
            if plan.policy is Policy.RESTORE:
                cursor.execute(f'SELECT * FROM "{plan.table}" ORDER BY "{plan.pk.column}"')
                snapshot[plan.label] = cursor.fetchall()
    return snapshot


def file_edit(data: bytes, edit) -> bytes:
    document = json.loads(data)
    edit(document)
    return json.dumps(document).encode()


def section(document: dict, label: str) -> dict:
    return next(s for s in document["data"] if s["model"] == label)


def restore(data: bytes, **options):
    return utils.tenant_data_import(source=io.BytesIO(data), schema_name=connection.schema_name, **options)


@pytest.fixture
def clinic_admin(tenant_a):
    from usuarios.models import Usuario

    return Usuario.objects.get(email="admin@clinica-a.test")


class RowStream:
    """An upload made only as far as it is read: `before`, then `sent` rows (make_row(i), comma
    separated), then `after`. `made` counts the rows made so far, so a test sees how far a reader
    went before it stopped. It has no seek(), as a non-seekable upload."""

    def __init__(self, before: bytes, make_row, sent: int, after: bytes):
        self.made = 0
        self._pieces = self._generate(before, make_row, sent, after)
        self._pending = b""

    def _generate(self, before: bytes, make_row, sent: int, after: bytes):
        yield before
        for i in range(sent):
            self.made += 1
            yield (b"," if i else b"") + make_row(i)
        yield after

    def read(self, size: int = -1) -> bytes:
        pieces, length = [self._pending], len(self._pending)
        while size < 0 or length < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            pieces.append(piece)
            length += len(piece)
        data = b"".join(pieces)
        if size < 0:
            size = len(data)
        self._pending = data[size:]
        return data[:size]
