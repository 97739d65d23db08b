"""The platform's page of every clinic's backups, in the public admin, for superusers only.

1. The overview reads every active clinic's backups through one selector
   (backups.selectors.backup_summary_list: a few schema-qualified queries, no schema
   switch per clinic), with its last restore drill and restore time, and every open alert
   (alertas.selectors: one query), says which clinics still have backups written before
   sealing (plain in the bucket), and links each clinic to its own admin, by path. The
   clinics someone must look at come first: across all of them, those with open alerts (one
   query), then by name, BACKUP_PLATFORM_PAGE_SIZE a page; on the page, any failing one
   (`clinic_is_failing`) before the others.
2. "Backup ahora" starts a backup of one clinic through the jobs
   (backups.jobs.enqueue.backup_enqueue) inside that clinic's tenant_context: inline without a
   broker, queued on Celery with one. It is audited in the clinic's log under the
   operator's e-mail, without an actor id: a platform user's id means nothing there.
3. "Simulacro ahora" starts a restore drill of the clinic's latest backup the same way
   (backups.drills.schedule.drill_enqueue); its outcome shows in the clinic's row.
"""
from __future__ import annotations

from dataclasses import replace

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_tenants.utils import tenant_context

from alertas.selectors import alerts_open_by_clinic, clinics_with_open_alerts_first
from backups.drills.schedule import drill_enqueue
from backups.jobs.enqueue import backup_enqueue
from backups.models import BackupRecord, DrillStatus
from backups.selectors import ClinicBackupSummary, backup_last_drilled, backup_summary_list
from bitacora.services import AuditContext
from core.clinic_paths import clinic_path_reverse
from core.exceptions import DomainError
from core.selectors import tenant_clinics, tenant_find


def clinic_is_failing(summary: ClinicBackupSummary, open_alerts: list) -> bool:
    """A clinic someone must look at: an open alert, overdue, its last drill failed, or its latest backup failed."""
    latest_failed = summary.last_failed_at is not None and (
        summary.last_completed_at is None or summary.last_failed_at > summary.last_completed_at)
    return bool(open_alerts) or summary.overdue or summary.last_drill_status == DrillStatus.FAILED or latest_failed


class PlatformBackupsAdmin:
    """Views hooked into an admin site (the public one): `urls` goes into the public URLConf."""

    def __init__(self, admin_site: admin.AdminSite):
        self.admin_site = admin_site

    @property
    def urls(self):
        return [
            path("", self._superuser_view(self.overview_view), name="backups"),
            path("<str:schema_name>/backup/", self._superuser_view(require_POST(self.backup_now_view)), name="backup_now"),
            path("<str:schema_name>/drill/", self._superuser_view(require_POST(self.drill_now_view)), name="drill_now"),
        ], "plataforma"

    def _superuser_view(self, view):
        def check(request, *args, **kwargs):
            if not request.user.is_superuser:
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return self.admin_site.admin_view(check)

    def overview_view(self, request):
        # A page of clinics at a time, those with open alerts first: at 10,000 clinics, reading every
        # clinic's backups and rendering every row takes seconds; a page of them, milliseconds.
        clinics = clinics_with_open_alerts_first(tenant_clinics(active_only=True))
        page = Paginator(clinics, settings.BACKUP_PLATFORM_PAGE_SIZE).get_page(request.GET.get("p"))
        summaries = backup_summary_list(clinics=list(page.object_list))
        alerts = alerts_open_by_clinic(schemas=[summary.tenant.schema_name for summary in summaries])
        rows = [
            {"summary": summary, "alerts": alerts.get(summary.tenant.schema_name, []),
             "failing": clinic_is_failing(summary, alerts.get(summary.tenant.schema_name, [])),
             "backups_url": clinic_path_reverse(summary.tenant.slug, "admin:backups_backuprecord_changelist")}
            for summary in summaries
        ]
        rows.sort(key=lambda row: not row["failing"])  # on the page too: failing first, then in the page's order
        context = {
            **self.admin_site.each_context(request),
            "title": _("Backups de todas las clínicas"),
            "rows": rows,
            "page": page,
            "clinics_count": page.paginator.count,
            "alerting_count": clinics.filter(has_open_alerts=True).count(),
            "failing_count": sum(row["failing"] for row in rows),
            "overdue_count": sum(summary.overdue for summary in summaries),
            "unsealed_clinics": sum(bool(summary.unsealed_count) for summary in summaries),
            "overdue_after_hours": f"{settings.BACKUP_OVERDUE_AFTER.total_seconds() / 3600:g}",
        }
        return TemplateResponse(request, "admin/backups/platform_backups.html", context)

    def backup_now_view(self, request, schema_name: str):
        tenant = tenant_find(schema_name, active_only=True)
        if tenant is None:
            raise Http404
        context = replace(AuditContext.from_request(request), actor_id=None)  # a platform user's id means nothing there
        with tenant_context(tenant):
            try:
                backup = backup_enqueue(context=context, backup_type=BackupRecord.Type.MANUAL, created_by=None)
            except DomainError as exc:
                messages.error(request, _("%(clinic)s: no se pudo crear el backup: %(reason)s")
                               % {"clinic": tenant.nombre, "reason": exc.message})
                return redirect("plataforma:backups")
            backup.refresh_from_db()
        if backup.status == BackupRecord.Status.COMPLETED:
            messages.success(request, _("%(clinic)s: backup creado, %(file)s (%(size)s MB).")
                             % {"clinic": tenant.nombre, "file": backup.file_name, "size": backup.file_size_mb})
        elif backup.status == BackupRecord.Status.FAILED:
            messages.error(request, _("%(clinic)s: no se pudo crear el backup: %(reason)s")
                           % {"clinic": tenant.nombre, "reason": backup.error})
        else:
            messages.info(request, _("%(clinic)s: backup en cola (%(file)s).") % {"clinic": tenant.nombre, "file": backup.file_name})
        return redirect("plataforma:backups")


    def drill_now_view(self, request, schema_name: str):
        tenant = tenant_find(schema_name, active_only=True)
        if tenant is None:
            raise Http404
        context = replace(AuditContext.from_request(request), actor_id=None)
        with tenant_context(tenant):
            try:
                drill_enqueue(context=context)
            except DomainError as exc:
                messages.error(request, _("%(clinic)s: no se pudo hacer el simulacro: %(reason)s")
                               % {"clinic": tenant.nombre, "reason": exc.message})
                return redirect("plataforma:backups")
            drilled = backup_last_drilled()
        if drilled is None or drilled.drill_status == DrillStatus.RUNNING:
            messages.info(request, _("%(clinic)s: simulacro en cola.") % {"clinic": tenant.nombre})
        elif drilled.drill_status == DrillStatus.PASSED:
            messages.success(request, _("%(clinic)s: simulacro correcto de %(file)s, restauración en %(seconds)s s.")
                             % {"clinic": tenant.nombre, "file": drilled.file_name, "seconds": drilled.drill_seconds})
        else:
            messages.error(request, _("%(clinic)s: simulacro de %(file)s: %(status)s, %(reason)s")
                           % {"clinic": tenant.nombre, "file": drilled.file_name, "status": drilled.get_drill_status_display(),
                              "reason": drilled.drill_error})
        return redirect("plataforma:backups")


platform_backups = PlatformBackupsAdmin(admin.site)
