"""PATCH keep as a form sends it: strings, and a missing field that is missing."""
from datetime import timedelta

import pytest
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from backups.models import BackupRecord
from backups.serializers import BackupKeepSerializer
from backups.tests.factories import stored_backup


def _patch_form(client, url, fields: dict, *, multipart: bool = True):
    if multipart:
        return client.patch(url, encode_multipart(BOUNDARY, fields), content_type=MULTIPART_CONTENT)
    from urllib.parse import urlencode

    return client.patch(url, urlencode(fields), content_type="application/x-www-form-urlencoded")


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "urlencoded"])
def test_patch_keep_as_a_form_takes_true_and_false_and_refuses_anything_else(client_for, tenant_a, backups_dir, multipart):
    # given a backup not kept
    backup = stored_backup(age=timedelta(days=2))
    url = f"/api/backups/history/{backup.pk}/"
    admin = client_for("test_a", "admin")

    # when a form sends keep=true, then it is kept
    response = _patch_form(admin, url, {"keep": "true"}, multipart=multipart)
    assert response.status_code == 200, response.content
    assert response.json()["keep"] is True and BackupRecord.objects.get(pk=backup.pk).keep is True

    # when a form sends no keep at all, or anything but "true"/"false", then 400 and it stays kept
    for fields in ({}, {"otro": "x"}, {"keep": ""}, {"keep": "1"}, {"keep": "True"}, {"keep": "sí"}):
        response = _patch_form(admin, url, fields, multipart=multipart)
        assert response.status_code == 400, fields
        assert response.json()["code"] == "invalid" and "keep" in response.json()["details"]["fields"]
        assert BackupRecord.objects.get(pk=backup.pk).keep is True

    # when a form sends keep=false, then it is no longer kept
    response = _patch_form(admin, url, {"keep": "false"}, multipart=multipart)
    assert response.status_code == 200 and BackupRecord.objects.get(pk=backup.pk).keep is False


@pytest.mark.parametrize("data", [{"keep": "true"}, {"keep": "false"}, {"keep": 1}, {"keep": None}, {}])
def test_keep_in_json_takes_only_json_booleans(data):
    assert not BackupKeepSerializer(data=data).is_valid()
