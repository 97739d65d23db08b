import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from rest_framework import exceptions as drf_exceptions
from rest_framework.exceptions import ValidationError

from bitacora.models import Bitacora, Outcome
from bitacora.services import AuditContext, failure_details, record
from core.errors import OperationInProgressError


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


@pytest.mark.parametrize(
    ("error", "kept"),
    [
        (ValidationError({"backup_file": ["No se envió ningún archivo."]}),
         {"code": "invalid", "message": "Los datos enviados no son válidos.",
          "error": {"fields": {"backup_file": ["No se envió ningún archivo."]}}}),
        (drf_exceptions.ParseError(), {"code": "parse_error", "message": str(drf_exceptions.ParseError.default_detail)}),
        (drf_exceptions.UnsupportedMediaType("text/plain"), {
            "code": "unsupported_media_type",
            "message": str(drf_exceptions.UnsupportedMediaType.default_detail).format(media_type="text/plain")}),
        (OperationInProgressError(), {"code": "backup_in_progress", "message": str(OperationInProgressError.message)}),
        (RuntimeError("postgres://usuario:clave@host/base"), {"code": "server_error", "exception": "RuntimeError"}),
    ],
    ids=["drf_validation", "drf_parse", "drf_media_type", "domain", "anything_else"],
)
def test_a_failure_is_kept_with_the_code_its_answer_carries(error, kept):
    # DRF's own errors as the API answers them (not server_error); a bug's text never
    assert failure_details(error) == kept


def test_a_restore_refused_by_validation_is_audited_with_the_code_it_answered(tenant_a, client_for):
    # given a restore request without its file
    last = Bitacora.objects.order_by("-id").values_list("id", flat=True).first() or 0

    # when it is posted
    response = client_for("test_a", "admin").post("/api/restore/", {"replace": "true"})

    # then the answer's code is the audit entry's
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    entry = Bitacora.objects.filter(action="tenant_data.restore", id__gt=last).get()
    assert entry.outcome == "error" and entry.details["code"] == "invalid"
    assert "backup_file" in entry.details["error"]["fields"]


@pytest.mark.parametrize(
    ("num_proxies", "meta", "kept"),
    [
        # no proxy configured: the peer is the client, whatever X-Forwarded-For claims
        (None, {"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "10.9.9.9"}, "198.51.100.7"),
        # one proxy (Render): the peer is the proxy, the client the address it appended
        (1, {"REMOTE_ADDR": "10.0.0.254", "HTTP_X_FORWARDED_FOR": "10.9.9.9, 198.51.100.7"}, "198.51.100.7"),
    ],
    ids=["no_proxy", "one_proxy"],
)
def test_an_entry_keeps_the_client_address_by_the_same_rule_as_the_login_limits(
    tenant_a, client_for, settings, num_proxies, meta, kept
):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": num_proxies}
    last = Bitacora.objects.order_by("-id").values_list("id", flat=True).first() or 0
    # when an audited operation is asked for (a restore without its file: refused, and audited)
    response = client_for("test_a", "admin").post("/api/restore/", {"replace": "true"}, **meta)
    # then its entry names the client, not the proxy nor an address the client wrote
    assert response.status_code == 400
    assert Bitacora.objects.filter(action="tenant_data.restore", id__gt=last).get().ip == kept


def test_a_restore_refused_for_too_many_files_is_audited_with_the_code_it_answered(tenant_a, client_for, settings):
    # given a restore request carrying more files than Django reads
    files = [SimpleUploadedFile(f"copia{n}.json", b"{}") for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)]
    last = Bitacora.objects.order_by("-id").values_list("id", flat=True).first() or 0

    # when it is posted
    response = client_for("test_a", "admin").post("/api/restore/", {"backup_file": files})

    # then the answer's code (not a server error's) is the audit entry's
    assert response.status_code == 400 and response.json()["code"] == "too_many_files"
    entry = Bitacora.objects.filter(action="tenant_data.restore", id__gt=last).get()
    assert entry.outcome == "error" and entry.details["code"] == "too_many_files"
