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
