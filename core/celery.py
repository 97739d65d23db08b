"""The Celery app. Jobs carry their clinic in a message header (tenant-schemas-celery),
set from the schema active when they are sent, and run inside that clinic's schema."""
import os

from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = CeleryApp("clinica")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
