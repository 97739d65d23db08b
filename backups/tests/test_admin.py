"""The clinic's Django Admin for backups goes through the same services as the API."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client

from backups.models import BackupRecord
from backups.tests.factories import stored_backup
from bitacora.models import Bitacora
from usuarios.models import Usuario


@pytest.fixture
def admin_client(tenant_a) -> Client:
    """The clinic's admin page, reached by its domain, logged in as the clinic's admin."""
    user = Usuario.objects.get(email="admin@clinica-a.test")
    # Django's own gates of the admin site and its model permissions; rolled back with the test.
    user.is_staff = user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    client = Client(HTTP_HOST="clinica-a.localhost")
    client.force_login(user)
    return client


def _as_tenant(response, tenant):
    connection.set_tenant(tenant)  # a request leaves the connection in its schema; come back
    return response


def test_changing_keep_in_the_admin_is_audited_like_the_api(admin_client, tenant_a, backups_dir):
    # given a backup
    backup = stored_backup(age=timedelta(days=1))
    # when the admin ticks keep on its change page
    response = _as_tenant(admin_client.post(f"/admin/backups/backuprecord/{backup.pk}/change/", {"keep": "on"}), tenant_a)
    # then it is stored and audited with the actor
    assert response.status_code == 302, response.content[:500]
    assert BackupRecord.objects.get(pk=backup.pk).keep is True
    entry = Bitacora.objects.get(action="backup.keep", target_id=str(backup.pk))
    assert entry.outcome == "ok" and entry.actor_email == "admin@clinica-a.test" and entry.details["keep"] is True


def test_the_admin_download_carries_the_checksum_header_as_the_api(admin_client, tenant_a, backups_dir):
    # given a completed backup whose recorded checksum and size are its object's
    backup = stored_backup(age=timedelta(days=1))
    BackupRecord.objects.filter(pk=backup.pk).update(sha256=hashlib.sha256(b"dump").hexdigest(), file_size=4)
    # when it is downloaded from the admin
    response = _as_tenant(admin_client.get(f"/admin/backups/backuprecord/{backup.pk}/download/"), tenant_a)
    # then the body, its length and its checksum header agree
    body = b"".join(response.streaming_content)
    assert response.status_code == 200
    assert response["X-Checksum-SHA256"] == hashlib.sha256(body).hexdigest()
    assert response["Content-Length"] == str(len(body)) == "4"
