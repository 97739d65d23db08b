from django.urls import path

from backup_restore.views import TenantDataExportView, TenantDataRestoreView

app_name = "backup_restore"

urlpatterns = [
    path("backup/", TenantDataExportView.as_view(), name="backup"),
    path("restore/", TenantDataRestoreView.as_view(), name="restore"),
]
