from django.urls import path

from backups import views

app_name = "backups"

urlpatterns = [
    path("history/", views.BackupHistoryListView.as_view(), name="backup_history"),
    path("create/", views.BackupCreateView.as_view(), name="backup_create"),
    path("history/<int:backup_id>/", views.BackupDetailView.as_view(), name="backup_detail"),
    path("history/<int:backup_id>/download/", views.BackupDownloadView.as_view(), name="backup_download"),
    path("history/<int:backup_id>/files/", views.BackupFilesView.as_view(), name="backup_files"),
    path("history/<int:backup_id>/restore/", views.BackupRestoreView.as_view(), name="backup_restore"),
    path("restores/<int:job_id>/", views.RestoreJobDetailView.as_view(), name="restore_detail"),
]
