"""The Celery app. Jobs carry their clinic in a message header (tenant-schemas-celery),
set from the schema active when they are sent, and run inside that clinic's schema.

Nothing imports this module at Django's start (core/__init__.py): the task modules
(backups.tasks, alertas.tasks) bind their tasks to `app`, so a job is sent through this
configured app whoever imports its task first, and the senders import a task module only
where they send (a command or a request that sends no job loads no Celery).
The beat schedule is plain data in settings (CELERY_BEAT_SCHEDULE, read without importing
Celery there): an entry whose schedule is a dict of crontab fields becomes a crontab here."""
import os

from celery.schedules import crontab
from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = CeleryApp("clinica")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def beat_schedule(entries: dict) -> dict:
    """CELERY_BEAT_SCHEDULE as beat reads it: seconds stay seconds, crontab fields become a crontab."""
    return {
        name: {**entry, "schedule": crontab(**entry["schedule"]) if isinstance(entry["schedule"], dict) else entry["schedule"]}
        for name, entry in entries.items()
    }


@app.on_after_configure.connect
def _beat_schedule_from_settings(sender, **kwargs) -> None:
    sender.conf.beat_schedule = beat_schedule(sender.conf.beat_schedule)
