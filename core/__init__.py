# The Celery app loads with Django, so @shared_task jobs bind to it.
from core.celery import app as celery_app

__all__ = ("celery_app",)
