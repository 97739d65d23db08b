from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Plataforma"
    # core.openapi (the schema's extensions) is not imported here: it loads with its AutoSchema,
    # where a schema is generated (DEFAULT_SCHEMA_CLASS), so that every start does not pay for it.
