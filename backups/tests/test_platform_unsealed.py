"""The platform's page says which clinics still have backups written before sealing (issue 20)."""
from html import unescape

from django_tenants.utils import schema_context

from backups.services import backup_create
from backups.tests.test_platform_admin import PAGE, operator  # noqa: F401 - the fixture
from bitacora.services import AuditContext

CONTEXT = AuditContext.system("prueba-plataforma-cifrado")


def test_the_page_shows_which_clinics_still_have_unencrypted_backups(operator, tenant_a, backups_dir, settings):  # noqa: F811
    # given clinic A with a backup written plain, then one sealed, and clinic B with sealed backups only
    settings.BACKUP_ENCRYPTION = "off"
    backup_create(context=CONTEXT)
    settings.BACKUP_ENCRYPTION = "on"
    backup_create(context=CONTEXT)
    with schema_context("test_b"):
        backup_create(context=CONTEXT)
        backup_create(context=CONTEXT)
    # when the operator opens the platform's page
    response = operator.get(PAGE)
    # then clinic A counts its plain backup and B none, and the page says how many clinics have any
    summaries = {row["summary"].tenant.schema_name: row["summary"] for row in response.context["rows"]}
    assert summaries["test_a"].unsealed_count >= 1 and summaries["test_b"].unsealed_count == 0
    assert summaries["test_a"].completed_count >= summaries["test_a"].unsealed_count + 1
    html = unescape(response.content.decode())
    clinics = sum(bool(summary.unsealed_count) for summary in summaries.values())
    assert f"Con backups sin cifrar: {clinics}." in html and clinics >= 1
    assert '<th scope="col">Sin cifrar</th>' in html
