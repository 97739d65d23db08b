"""What a JSON backup holds and in what order: the models, their policy and fields, dependencies first.

Shared by the export, the import and the diagnosis of a refused row, with the
names they all use in SQL.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from django.db import connection, models

from backup_restore.classification import Policy, exported_fields, model_classification, tenant_models

FORMAT_NAME = "clinica-tenant-data"
FORMAT_VERSION = 1
# Each section's rows pass through this temporary table on their way in (see importer.py).
STAGE = "pg_temp._backup_restore_stage"

ProgressCallback = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class ModelPlan:
    model: type[models.Model]
    label: str
    policy: Policy
    reason: str
    fields: tuple[models.Field, ...]

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def pk(self) -> models.Field:
        return self.model._meta.pk


def qn(name: str) -> str:
    return connection.ops.quote_name(name)


def qualified_table(schema: str, model: type[models.Model]) -> str:
    return f"{qn(schema)}.{qn(model._meta.db_table)}"


def _dependencies(model: type[models.Model], candidates: set) -> set:
    deps = set()
    for f in model._meta.local_concrete_fields:
        related = f.related_model if f.is_relation else None
        if related is not None and related is not model and related in candidates:
            deps.add(related)
    return deps


def models_plan() -> list[ModelPlan]:
    """Every tenant model, classified, in foreign-key dependency order (cycles broken by label)."""
    all_models = sorted(tenant_models(), key=lambda m: m._meta.label_lower)
    candidates = set(all_models)
    pending = {m: _dependencies(m, candidates) for m in all_models}
    ordered: list[type[models.Model]] = []
    while pending:
        ready = [m for m in pending if not (pending[m] - set(ordered))]
        if not ready:  # a cycle: deferred constraints make any order valid
            ready = [next(iter(pending))]
        for m in ready:
            ordered.append(m)
            del pending[m]
    plans = []
    for m in ordered:
        c = model_classification(m)
        plans.append(ModelPlan(m, m._meta.label_lower, c.policy, c.reason, tuple(exported_fields(m))))
    return plans
