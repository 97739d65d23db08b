from types import SimpleNamespace

from backup_restore.classification import Policy, model_classification, tenant_models
from backup_restore.utils import models_plan


def test_every_tenant_model_is_classified():
    # given every model of every tenant app (backups and any app added later included)
    models = tenant_models()

    # when each is classified
    unclassified = [m._meta.label_lower for m in models if not model_classification(m).classified]

    # then none is left to chance: add it to APP_POLICIES or MODEL_POLICIES
    assert models
    assert unclassified == []


def test_a_model_of_an_unknown_app_is_reported_as_unclassified_and_not_exported():
    # given a model in an app nobody classified
    stranger = SimpleNamespace(_meta=SimpleNamespace(label_lower="nueva_app.secreto", app_label="nueva_app"))

    # when it is classified
    classification = model_classification(stranger)

    # then it is flagged and left out
    assert classification.classified is False
    assert classification.policy is Policy.EXCLUDED


def test_users_audit_log_and_backup_history_are_exported_but_never_restored():
    # given the plan
    plans = {p.label: p.policy for p in models_plan()}

    # then seed 004's exclusions hold, and Django's own tables are left out
    assert plans["usuarios.usuario"] is Policy.EXPORT_ONLY
    assert plans["bitacora.bitacora"] is Policy.EXPORT_ONLY
    assert all(policy is not Policy.RESTORE for label, policy in plans.items() if label.startswith("backups."))
    for label in ("contenttypes.contenttype", "auth.permission", "admin.logentry", "sessions.session"):
        assert plans[label] is Policy.EXCLUDED
    assert plans["clinica.paciente"] is Policy.RESTORE


def test_models_come_in_foreign_key_dependency_order():
    # given the plan
    order = [p.label for p in models_plan()]

    # then every referenced model comes before the models that reference it
    assert order.index("clinica.paciente") < order.index("clinica.cita")
    assert order.index("clinica.odontologo") < order.index("clinica.cita")
    assert order.index("usuarios.usuario") < order.index("clinica.odontologo")
    assert order.index("clinica.factura") < order.index("clinica.lineafactura") 
    assert order.index("clinica.factura") < order.index("clinica.pago")


def test_password_is_never_an_exported_field():
    plan = next(p for p in models_plan() if p.label == "usuarios.usuario")
    assert "password" not in [f.name for f in plan.fields]
