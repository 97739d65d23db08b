"""The platform: settings, tenancy, the API's shared pieces.

The Celery app (core.celery) is not imported here, so that a command or a web process that
sends no job never loads Celery: the task modules bind their tasks to it, and
`celery -A core` finds core.celery by itself."""
