import uuid

import pytest
from django.db import transaction

from bitacora.models import Bitacora, Outcome
from bitacora.services import AuditContext, record


class OperationFailed(Exception):
    pass


def test_entry_of_a_failed_operation_survives_its_rollback(tenant_a):
    # given an operation that records its failure and then rolls back
    marker = f"rollback-{uuid.uuid4()}"
    with pytest.raises(OperationFailed):
        with transaction.atomic():
            record(context=AuditContext.system("prueba"), action="tenant_data.restore", outcome=Outcome.ERROR, details={"marker": marker})
            raise OperationFailed
    # then the entry is still there
    entry = Bitacora.objects.get(details__marker=marker)
    assert entry.outcome == "error"
    assert entry.actor_email == "prueba"


def test_entries_are_written_in_the_current_clinic_only(tenant_a, tenants):
    from django_tenants.utils import schema_context

    marker = f"solo-a-{uuid.uuid4()}"
    record(context=AuditContext.system("prueba"), action="prueba.aislamiento", details={"marker": marker})
    assert Bitacora.objects.filter(details__marker=marker).exists()
    with schema_context("test_b"):
        assert not Bitacora.objects.filter(details__marker=marker).exists()


def test_entries_cannot_be_edited_or_deleted(tenant_a):
    entry = record(context=AuditContext.system("prueba"), action="prueba.inmutable")
    entry = Bitacora.objects.get(pk=entry.pk)
    entry.action = "otra"
    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        entry.delete()
    with pytest.raises(TypeError):
        Bitacora.objects.filter(pk=entry.pk).update(action="otra")
    with pytest.raises(TypeError):
        Bitacora.objects.filter(pk=entry.pk).delete()
