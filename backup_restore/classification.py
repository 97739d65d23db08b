"""Which tenant models are exported, restored or left out — as data, so a test can check it.

Every model of every tenant app must be classified, by its own entry in
MODEL_POLICIES or by its app's entry in APP_POLICIES; a model that is neither
is left out of the export and makes `test_every_tenant_model_is_classified` fail.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from django.apps import apps
from django.conf import settings
from django.db import models

logger = logging.getLogger(__name__)


class Policy(str, Enum):
    RESTORE = "restore"  # exported and restored
    EXPORT_ONLY = "export_only"  # exported, never restored (seed 004: users, audit log, backup history)
    EXCLUDED = "excluded"  # neither exported nor restored


# App-level rules: every model of the app, present or future, follows its app.
APP_POLICIES: dict[str, tuple[Policy, str]] = {
    "clinica": (Policy.RESTORE, "Datos de la clínica."),
    "usuarios": (Policy.EXPORT_ONLY, "Los usuarios no se restauran por seguridad; se exportan sin contraseña."),
    "bitacora": (Policy.EXPORT_ONLY, "La bitácora se exporta pero no se restaura: es de sólo inserción."),
    "backups": (Policy.EXPORT_ONLY, "El historial de backups no se restaura: describe archivos, no datos."),
}

# Model-level rules win over app-level ones. Labels are `_meta.label_lower`.
MODEL_POLICIES: dict[str, tuple[Policy, str]] = {
    "contenttypes.contenttype": (Policy.EXCLUDED, "La crea `migrate`; sus ids varían entre clínicas."),
    "auth.permission": (Policy.EXCLUDED, "La crea `migrate`; depende de los content types."),
    "auth.group": (Policy.EXCLUDED, "Los permisos de la API salen de `usuarios.rol`, no de grupos."),
    "auth.group_permissions": (Policy.EXCLUDED, "Tabla intermedia de grupos y permisos de Django."),
    "admin.logentry": (Policy.EXCLUDED, "Historial del Django Admin; apunta a usuarios y content types."),
    "sessions.session": (Policy.EXCLUDED, "Sesiones: efímeras y secretas."),
    "usuarios.usuario_groups": (Policy.EXCLUDED, "Grupos de Django de los usuarios (no se usan)."),
    "usuarios.usuario_user_permissions": (Policy.EXCLUDED, "Permisos de Django de los usuarios (no se usan)."),
}

# Never written, whatever the model: hashes, tokens, secrets.
EXCLUDED_FIELDS: dict[str, dict[str, str]] = {
    "usuarios.usuario": {"password": "Hash de contraseña."},
}
SECRET_FIELD_MARKERS = ("password", "secret", "token", "api_key")

UNCLASSIFIED = "Modelo sin clasificar en backup_restore/classification.py: no se exporta."


@dataclass(frozen=True)
class Classification:
    policy: Policy
    reason: str
    classified: bool = True


def tenant_app_labels() -> list[str]:
    return [apps.get_app_config(name.rsplit(".", 1)[-1]).label for name in settings.TENANT_APPS]


def tenant_models() -> list[type[models.Model]]:
    """Every table-backed model of the tenant apps, auto-created through tables included."""
    labels = set(tenant_app_labels())
    return [
        model
        for model in apps.get_models(include_auto_created=True)
        if model._meta.app_label in labels and not model._meta.proxy and model._meta.managed
    ]


def model_classification(model: type[models.Model]) -> Classification:
    label = model._meta.label_lower
    if label in MODEL_POLICIES:
        return Classification(*MODEL_POLICIES[label])
    if model._meta.app_label in APP_POLICIES:
        return Classification(*APP_POLICIES[model._meta.app_label])
    logger.warning("backup_restore: %s is not classified; it is not exported.", label)
    return Classification(Policy.EXCLUDED, UNCLASSIFIED, classified=False)


def is_secret_field(model: type[models.Model], field: models.Field) -> bool:
    if field.name in EXCLUDED_FIELDS.get(model._meta.label_lower, {}):
        return True
    name = field.name.lower()
    return any(marker in name for marker in SECRET_FIELD_MARKERS)


def exported_fields(model: type[models.Model]) -> list[models.Field]:
    """The columns of the model's own table that a file may carry (never a secret)."""
    return [field for field in model._meta.local_concrete_fields if not is_secret_field(model, field)]
