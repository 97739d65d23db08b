from django.contrib import admin, messages
from django.http import HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html

from backups.models import BackupRecord
from backups.services import backup_create, backup_delete, backup_files_archive, backup_open, backup_set_keep
from bitacora.services import AuditContext
from core.exceptions import DomainError
from usuarios.permissions import AdminOrPropietarioAdminMixin


@admin.register(BackupRecord)
class BackupRecordAdmin(AdminOrPropietarioAdminMixin, admin.ModelAdmin):
    """Backups are made by the pipeline, not typed in: only `keep` can be changed by hand."""

    list_display = (
        "file_name", "status", "file_size_mb", "files_count", "warning", "backup_type", "created_by", "created_at", "integrity",
        "keep", "download_link", "files_link",
    )
    list_filter = ("status", "backup_type", "integrity", "keep")
    search_fields = ("file_name",)
    date_hierarchy = "created_at"
    fields = (
        "file_name", "file_path", "file_size", "backup_type", "created_by", "created_at", "status", "finished_at",
        "sha256", "sql_size", "sql_sha256", "files_count", "files_size", "warning", "warnings", "integrity", "verified_at", "error", "manifest",
        "keep",
    )
    readonly_fields = tuple(field for field in fields if field != "keep")

    def has_add_permission(self, request):
        return False

    @admin.display(description="Descargar")
    def download_link(self, obj: BackupRecord):
        if obj.status != BackupRecord.Status.COMPLETED:
            return "—"
        return format_html('<a href="{}">descargar</a>', reverse("admin:backups_backuprecord_download", args=[obj.pk]))

    @admin.display(description="Archivos")
    def files_link(self, obj: BackupRecord):
        if obj.status != BackupRecord.Status.COMPLETED or not obj.files_count:
            return "—"
        return format_html('<a href="{}">{} archivos (.tar)</a>', reverse("admin:backups_backuprecord_files", args=[obj.pk]),
                           obj.files_count)

    def get_urls(self):
        custom = [
            path("create-now/", self.admin_site.admin_view(self.create_now_view), name="backups_backuprecord_create_now"),
            path("<int:backup_id>/download/", self.admin_site.admin_view(self.download_view), name="backups_backuprecord_download"),
            path("<int:backup_id>/files/", self.admin_site.admin_view(self.files_view), name="backups_backuprecord_files"),
        ]
        return custom + super().get_urls()

    def create_now_view(self, request):
        self.require_admin_o_propietario(request)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            backup = backup_create(context=AuditContext.from_request(request), created_by=request.user)
            if backup.warnings:
                self.message_user(request, f"Backup creado con advertencias: {backup.file_name} ({backup.warning})",
                                  messages.WARNING)
            else:
                self.message_user(request, f"Backup creado: {backup.file_name} ({backup.file_size_mb} MB)", messages.SUCCESS)
        except DomainError as exc:
            self.message_user(request, f"No se pudo crear el backup: {exc.message}", messages.ERROR)
        return redirect("admin:backups_backuprecord_changelist")

    def download_view(self, request, backup_id: int):
        self.require_admin_o_propietario(request)
        try:
            backup, stored_file = backup_open(context=AuditContext.from_request(request), backup_id=backup_id)
        except DomainError as exc:
            self.message_user(request, f"No se pudo descargar: {exc.message}", messages.ERROR)
            return redirect("admin:backups_backuprecord_changelist")
        from backups.views import backup_download_response  # the API's views and DRF: not at every command's start

        return backup_download_response(request, backup, stored_file)

    def files_view(self, request, backup_id: int):
        self.require_admin_o_propietario(request)
        try:
            backup, size, chunks = backup_files_archive(context=AuditContext.from_request(request), backup_id=backup_id)
        except DomainError as exc:
            self.message_user(request, f"No se pudieron descargar los archivos: {exc.message}", messages.ERROR)
            return redirect("admin:backups_backuprecord_changelist")
        from backups.views import backup_files_response

        return backup_files_response(backup, size, chunks)

    def save_model(self, request, obj, form, change):
        # `keep` is the one editable field: through the service, so the change is audited as the API's is.
        if "keep" in form.changed_data:
            backup_set_keep(context=AuditContext.from_request(request), backup_id=obj.pk, keep=obj.keep)

    def delete_model(self, request, obj):
        # Through the service: the stored object goes too, and the deletion is audited.
        backup_delete(context=AuditContext.from_request(request), backup_id=obj.pk)

    def delete_queryset(self, request, queryset):
        for backup in queryset:
            self.delete_model(request, backup)
