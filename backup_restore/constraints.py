"""Load first, then index and constrain, as psql does with a pg_dump file.

Checked row by row, a million rows queue a million foreign-key trigger events, and
every insert updates every index. So for the load the restore drops the foreign
keys between restored tables and (once the tables are emptied) their non-unique
indexes, and afterwards builds each index once and adds each key back, validated
by one join. Keys to tables a restore does not write (users) stay: dropping one
would lock that table, and every request of the clinic with it, for the whole
restore. Other unique indexes stay: they are what reports a repeated value.

A replace also drops the emptied tables' primary keys while their rows are loaded: every
row inserted into a btree costs the load a quarter of its time on the million-row
clinic, against one sorted build at the table's end. A repeated key is then found when
the key is built (loader.py names the row), or before a batch goes through the staging
path, whose ON CONFLICT needs the key. Only keys nothing else depends on are dropped: a
TRUNCATE that succeeded proves no table outside the restore points at them.
"""
from __future__ import annotations

from backup_restore.diagnosis import Execute, dangling_keys_reported
from backup_restore.plan import ModelPlan, qn, qualified_table


class SuspendedConstraints:
    def __init__(self, *, execute: Execute, schema: str, restorable: list[ModelPlan]):
        self.execute = execute
        self.schema = schema
        self.restorable = restorable
        self.tables = [qualified_table(schema, plan.model) for plan in restorable]
        # (table, name, definition, the table's oid, the oid of the table it points to)
        self.foreign_keys: list[tuple[str, str, str, int, int]] = []
        self.indexes: list[tuple[str, str]] = []
        self.primary_keys: dict[int, str] = {}  # the table's oid: its ADD CONSTRAINT … PRIMARY KEY, once dropped
        self.primary_keys_pending: set[int] = set()  # those no table's end took yet
        self.oids: dict[str, int] = {}
        self.pending_statements: list[str] = []

    def _qualified(self, regclass_text: str) -> str:
        """A table named as regclass prints it (unqualified inside the search_path), qualified."""
        return regclass_text if "." in regclass_text else f"{qn(self.schema)}.{qn(regclass_text)}"

    def drop_foreign_keys(self) -> None:
        """Drop the foreign keys between restored tables; restore() adds them back."""
        self.foreign_keys = self.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.conrelid, c.confrelid "
            "FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.conrelid = ANY(%s::regclass[]) AND c.confrelid = ANY(%s::regclass[])",
            [self.tables, self.tables],
        ).fetchall()
        for table, name, *_definition_and_oids in self.foreign_keys:
            self.execute(f"ALTER TABLE {self._qualified(table)} DROP CONSTRAINT {qn(name)}")
        # Looked up now: take_indexes and keys_ready are called with the background's COPYs in flight.
        self.oids = dict(self.execute("SELECT t, t::regclass::oid FROM unnest(%s::text[]) t", [self.tables]).fetchall())

    def drop_secondary_indexes(self) -> None:
        """With the tables emptied, drop their non-unique indexes; restore() builds them again."""
        self.indexes = self.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indrelid FROM pg_index i "
            "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisunique AND NOT i.indisprimary "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            [self.tables],
        ).fetchall()
        for index, _definition, _table in self.indexes:
            self.execute(f"DROP INDEX {self._qualified(index)}")

    def drop_primary_keys(self) -> None:
        """With the tables emptied, drop their primary keys that no foreign key depends on."""
        keys = self.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.conrelid FROM pg_constraint c "
            "WHERE c.contype = 'p' AND c.conrelid = ANY(%s::regclass[]) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid)",
            [self.tables],
        ).fetchall()
        for table, name, definition, oid in keys:
            qualified = self._qualified(table)
            self.execute(f"ALTER TABLE {qualified} DROP CONSTRAINT {qn(name)}")
            self.primary_keys[oid] = f"ALTER TABLE {qualified} ADD CONSTRAINT {qn(name)} {definition}"
        self.primary_keys_pending = set(self.primary_keys)

    def take_primary_key(self, table: str) -> list[str]:
        """The statement that adds back the table's dropped primary key, for a table's end to run (none
        if it was not dropped, or was built already). Until it is built, primary_key_missing still gives it."""
        oid = self.oids[table]
        if oid not in self.primary_keys_pending:
            return []
        self.primary_keys_pending.discard(oid)
        return [self.primary_keys[oid]]

    def primary_key_missing(self, table: str) -> list[str]:
        """The statement that adds back the table's primary key if the load dropped it and it is not back
        (a table's end sent to the background may have failed to build it): for the caller to run now."""
        oid = self.oids.get(table)
        if oid not in self.primary_keys:
            return []
        self.primary_keys_pending.discard(oid)
        (missing,) = self.execute(_PRIMARY_KEY_MISSING_SQL, [[oid]]).fetchone()
        return [self.primary_keys[oid]] if missing else []

    def take_indexes(self, table: str) -> list[str]:
        """The definitions of the dropped indexes of one table, for the caller to build now; restore() will not."""
        oid = self.oids[table]
        taken = [definition for _index, definition, indrelid in self.indexes if indrelid == oid]
        self.indexes = [entry for entry in self.indexes if entry[2] != oid]
        return taken

    def keys_ready(self, loaded: set[str]) -> list[str]:
        """The ALTER TABLE … ADD CONSTRAINT of the dropped keys whose two tables are `loaded`
        (qualified names), taken: the caller adds them (and gives back those it could not); restore() will not."""
        loaded_oids = {self.oids[table] for table in loaded if table in self.oids}
        ready = [key for key in self.foreign_keys if {key[3], key[4]} <= loaded_oids]
        self.foreign_keys = [key for key in self.foreign_keys if key not in ready]
        return [self.add_key_sql(key) for key in ready]

    def add_key_sql(self, key: tuple[str, str, str, int, int]) -> str:
        table, name, definition, _child, _parent = key
        return f"ALTER TABLE {self._qualified(table)} ADD CONSTRAINT {qn(name)} {definition}"

    def give_back(self, statements: list[str]) -> None:
        """Keys keys_ready took that were not added: restore() adds them, and names a row that points nowhere."""
        self.pending_statements += statements

    def restore(self) -> None:
        """Run the checks still queued (keys to users), rebuild the dropped indexes, add the
        dropped keys back: each refuses the restore, naming the row, if a key points nowhere.
        The primary keys still dropped are those of tables the file brought no rows for."""
        with dangling_keys_reported(self.execute, self.schema, self.restorable):
            self.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # Only now: CREATE INDEX and ALTER TABLE refuse a table with checks still queued.
        # The primary keys first: the foreign keys need them.
        (missing,) = self.execute(_PRIMARY_KEY_MISSING_SQL, [list(self.primary_keys)]).fetchone()
        for oid in missing or []:
            self.execute(self.primary_keys[oid])
        self.primary_keys_pending = set()
        for _index, definition, _table in self.indexes:
            self.execute(definition)
        with dangling_keys_reported(self.execute, self.schema, self.restorable):
            for statement in [*self.pending_statements, *map(self.add_key_sql, self.foreign_keys)]:
                self.execute(statement)
        self.execute("SET CONSTRAINTS ALL DEFERRED")


# Of the tables (oids) given, those without a primary key.
_PRIMARY_KEY_MISSING_SQL = (
    "SELECT array_agg(t) FROM unnest(%s::oid[]) t WHERE NOT EXISTS "
    "(SELECT 1 FROM pg_constraint c WHERE c.conrelid = t AND c.contype = 'p')"
)
