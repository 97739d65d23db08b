"""Naming the row PostgreSQL refused, and why, once a batch or a foreign key fails.

The importer writes a whole section with one statement, so PostgreSQL's error
names a constraint or a type but rarely the row. Here one targeted query over the
staging table (or the restored table, for a dangling key) finds the first
offending row, so the 400 answer carries model, pk, field and reason.
Only runs after a failure: the fast path never pays for it.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from django.db import DatabaseError, connection, models, transaction
from django.utils.translation import gettext as _

from backup_restore import errors
from backup_restore.plan import STAGE, ModelPlan, qn, qualified_table

# The restorer's execute(sql, params=None): runs on its cursor and returns it.
Execute = Callable[..., Any]

_INPUT_IS_VALID_FUNCTION = r"""
CREATE OR REPLACE FUNCTION pg_temp.input_is_valid(value text, type_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    -- An explicit cast to varchar(n) truncates instead of failing, so lengths are compared.
    IF type_name ~ '^varchar\(\d+\)$' THEN
        RETURN length(value) <= substring(type_name FROM '\((\d+)\)')::int;
    END IF;
    EXECUTE format('SELECT %L::%s', value, type_name);
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END
$$
"""


def pg_message(exc: Exception) -> str:
    cause = exc.__cause__ or exc
    return (getattr(getattr(cause, "diag", None), "message_primary", None) or str(cause).splitlines()[0])[:300]


def first_repeat_sql(table: str, pk: str, columns: list[str]) -> str:
    """The first row of `table` (as `t`), in its physical order, whose `columns` (expressions) repeat an
    earlier row's: its position (page, item), its key `pk` and those values, as text. A table emptied by
    this transaction and then only COPYed into keeps its rows in the file's order. NULLs repeat nothing."""
    values = ", ".join(f"{column} AS v{i}" for i, column in enumerate(columns))
    return (
        f"SELECT (d.ctid::text::point)[0], (d.ctid::text::point)[1], d.k::text, "
        f"{', '.join(f'd.v{i}::text' for i in range(len(columns)))} FROM ("
        f"SELECT t.ctid, {pk} AS k, {values}, row_number() OVER (PARTITION BY {', '.join(columns)} ORDER BY t.ctid) AS n "
        f"FROM {table} t WHERE {' AND '.join(f'{column} IS NOT NULL' for column in columns)}) d "
        "WHERE d.n = 2 ORDER BY d.ctid LIMIT 1"
    )


def repeated_key_error(plan: ModelPlan, pk) -> errors.DuplicatePrimaryKeyError:
    return errors.DuplicatePrimaryKeyError(details={"model": plan.label, "pk": pk,
                                                    "reason": _("La clave primaria aparece más de una vez.")})


def refused_batch_error(
    execute: Execute, plan: ModelPlan, fields: list[models.Field], exc: DatabaseError
) -> errors.RestoreError:
    """Which staged row PostgreSQL refused, and why."""
    error = _batch_error(execute, plan, fields, exc)
    error.details["pk"] = key_value(plan, error.details.get("pk"))  # read back from jsonb as text
    return error


def key_value(plan: ModelPlan, pk):
    """A key read back as text, as the file spells it: an integer key answers as one."""
    if isinstance(pk, str) and isinstance(plan.pk, (models.AutoField, models.IntegerField)):
        try:
            return int(pk)
        except ValueError:
            pass
    return pk


def _batch_error(execute: Execute, plan: ModelPlan, fields: list[models.Field], exc: DatabaseError) -> errors.RestoreError:
    cause = exc.__cause__
    pgcode = getattr(cause, "pgcode", "") or ""
    diag = getattr(cause, "diag", None)
    pk_index = fields.index(plan.pk)
    base = {"model": plan.label, "pk": None, "reason": pg_message(exc)}
    if pgcode == "21000":  # ON CONFLICT touched a row twice: a repeated primary key
        key = f"t.j->>{pk_index}"
        row = execute(first_repeat_sql(STAGE, key, [key])).fetchone()
        return repeated_key_error(plan, row[2] if row else None)
    if pgcode == "23502" and diag is not None:  # not null
        f = next((f for f in fields if f.column == diag.column_name), None)
        if f is not None:
            null_index = fields.index(f)
            row = execute(f"SELECT s.j->>{pk_index} FROM {STAGE} s WHERE s.j->>{null_index} IS NULL LIMIT 1").fetchone()
            return errors.MissingFieldError(details={**base, "pk": row[0] if row else None, "field": f.attname,
                                                     "reason": _("Valor obligatorio nulo.")})
    if pgcode == "23505":
        return _unique_violation(execute, fields, diag, pk_index, base)
    if pgcode.startswith("23"):
        return errors.ConstraintViolationError(details={**base, "constraint": getattr(diag, "constraint_name", None)})
    if pgcode.startswith("22"):
        error = _invalid_value(execute, fields, pk_index, base)
        if error is not None:
            return error
    return errors.InvalidValueError(details=base)


def _unique_violation(execute: Execute, fields: list[models.Field], diag, pk_index: int, base: dict) -> errors.RestoreError:
    details = {**base, "reason": (diag.message_detail if diag else None) or base["reason"]}
    match = re.match(r"Key \(([^,()]+)\)=\((.*)\) already exists", (diag.message_detail or "") if diag else "")
    f = next((f for f in fields if match and f.column == match.group(1).strip('"')), None)
    if f is not None:
        details["field"] = f.attname
        pks = [r[0] for r in execute(
            f"SELECT s.j->>{pk_index} FROM {STAGE} s WHERE s.j->>{fields.index(f)} = %s ORDER BY s.ctid LIMIT 2",
            [match.group(2)],
        ).fetchall()]
        # the row that collided is the later one (or the only one, against a row already here)
        details["pk"] = pks[-1] if pks else None
    return errors.UniqueViolationError(details=details)


def _invalid_value(execute: Execute, fields: list[models.Field], pk_index: int, base: dict) -> errors.RestoreError | None:
    """The first staged value its column's type refuses (a bad date, a number as text, a string too long)."""
    validator = "pg_input_is_valid"
    if connection.pg_version < 160000:
        # pg_input_is_valid arrived in PostgreSQL 16; before it, a function of our own
        # (in pg_temp: it disappears with the session) does the same for diagnosis.
        execute(_INPUT_IS_VALID_FUNCTION)
        validator = "pg_temp.input_is_valid"
    for i, f in enumerate(fields):
        if isinstance(f, models.JSONField):
            continue
        db_type = f.db_type(connection)
        row = execute(
            f"SELECT s.j->>{pk_index}, s.j->>{i} FROM {STAGE} s "
            f"WHERE s.j->>{i} IS NOT NULL AND NOT {validator}(s.j->>{i}, %s) LIMIT 1",
            [db_type],
        ).fetchone()
        if row:
            return errors.InvalidValueError(details={
                **base, "pk": row[0], "field": f.attname,
                "reason": _("Valor %(value)s no válido para %(type)s (%(db_type)s).") % {
                    "value": repr(row[1][:80]), "type": f.get_internal_type(), "db_type": db_type},
            })
    return None


@contextmanager
def dangling_keys_reported(execute: Execute, schema: str, restorable: list[ModelPlan]) -> Iterator[None]:
    """A foreign key that fails inside the block refuses the restore, naming the row that points nowhere."""
    try:
        with transaction.atomic():
            yield
    except DatabaseError as exc:
        raise _dangling_key_error(execute, schema, restorable, exc) from None


def _dangling_key_error(
    execute: Execute, schema: str, restorable: list[ModelPlan], exc: DatabaseError
) -> errors.DanglingForeignKeyError:
    cause = exc.__cause__
    diag = getattr(cause, "diag", None)
    details: dict[str, Any] = {"model": None, "pk": None, "reason": pg_message(exc)}
    if diag is not None and getattr(cause, "pgcode", "") == "23503":
        plan = next((p for p in restorable if p.table == diag.table_name), None)
        match = re.match(r"Key \(([^,()]+)\)=\((.*)\) is not present", diag.message_detail or "")
        if plan is not None:
            details["model"] = plan.label
            if match:
                column = match.group(1).strip('"')
                f = next((f for f in plan.fields if f.column == column), None)
                details["field"] = f.attname if f else column
                row = execute(
                    f"SELECT {qn(plan.pk.column)} FROM {qualified_table(schema, plan.model)} "
                    f"WHERE {qn(column)}::text = %s LIMIT 1",
                    [match.group(2)],
                ).fetchone()
                details["pk"] = row[0] if row else None
                details["reason"] = _("%(field)s=%(value)s apunta a un registro que no existe.") % {
                    "field": details["field"], "value": match.group(2)}
    return errors.DanglingForeignKeyError(details=details)
