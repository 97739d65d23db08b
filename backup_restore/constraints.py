"""Load first, then index and constrain, as psql does with a pg_dump file.

Checked row by row, a million rows queue a million foreign-key trigger events, and
every insert updates every index. So for the load the restore drops the foreign
keys between restored tables and (once the tables are emptied) their non-unique
indexes, and afterwards builds each index once and adds each key back, validated
by one join. Keys to tables a restore does not write (users) stay: dropping one
would lock that table, and every request of the clinic with it, for the whole
restore.

A replace also drops the emptied tables' primary keys and unique constraints while their
rows are loaded: a row inserted into a btree costs more than its share of one sorted
build at the table's end (on the million-row clinic, loading the invoices with their two
unique constraints took 0.57 s, and 0.25 s with them built afterwards). A repeated value
is then found when the key is built (loader.py names the first row, in the file's order,
that repeats one), before a batch goes through the staging path (whose ON CONFLICT needs
the key), or when a later row of the table is refused. Only plain keys, `PRIMARY KEY (…)`
or `UNIQUE (…)`, that no foreign key depends on are dropped, and only after a TRUNCATE
that succeeded: no table outside the restore points at them. Unique indexes that are not
constraints (partial, on expressions) stay, and report a repeated value as the rows come.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from backup_restore.diagnosis import Execute, dangling_keys_reported
from backup_restore.plan import ModelPlan, qn, qualified_table


_PLAIN_KEY = re.compile(r"^(PRIMARY KEY|UNIQUE) \([^()]*\)$")


@dataclass(frozen=True)
class DroppedKey:
    """A primary key or unique constraint dropped for the load: what adds it back, and what it was on."""
    name: str
    statement: str
    columns: tuple[str, ...]
    primary: bool


class SuspendedConstraints:
    def __init__(self, *, execute: Execute, schema: str, restorable: list[ModelPlan]):
        self.execute = execute
        self.schema = schema
        self.restorable = restorable
        self.tables = [qualified_table(schema, plan.model) for plan in restorable]
        # (table, name, definition, the table's oid, the oid of the table it points to)
        self.foreign_keys: list[tuple[str, str, str, int, int]] = []
        self.indexes: list[tuple[str, str]] = []
        self.unique_keys: dict[int, list[DroppedKey]] = {}  # by the table's oid, once dropped
        self.unique_keys_pending: set[int] = set()  # tables whose keys no table's end took yet
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

    def drop_unique_keys(self) -> None:
        """With the tables emptied, drop their plain primary keys and unique constraints that no foreign key depends on."""
        keys = self.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.conrelid, c.contype = 'p', "
            "array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, i) JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.i) "
            "FROM pg_constraint c WHERE c.contype IN ('p', 'u') AND c.conrelid = ANY(%s::regclass[]) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid) "
            "ORDER BY c.conrelid, c.contype = 'p' DESC, c.conname",
            [self.tables],
        ).fetchall()
        for table, name, definition, oid, primary, columns in keys:
            if not _PLAIN_KEY.match(definition):
                continue
            qualified = self._qualified(table)
            self.execute(f"ALTER TABLE {qualified} DROP CONSTRAINT {qn(name)}")
            statement = f"ALTER TABLE {qualified} ADD CONSTRAINT {qn(name)} {definition}"
            self.unique_keys.setdefault(oid, []).append(DroppedKey(name, statement, tuple(columns), primary))
        self.unique_keys_pending = set(self.unique_keys)

    def take_unique_keys(self, table: str) -> list[str]:
        """The statements that add back the table's dropped keys, for a table's end to run (none if none
        was dropped, or they were built already). Until they are built, unique_keys_missing still gives them."""
        oid = self.oids[table]
        if oid not in self.unique_keys_pending:
            return []
        self.unique_keys_pending.discard(oid)
        return [key.statement for key in self.unique_keys[oid]]

    def unique_keys_missing(self, table: str) -> list[DroppedKey]:
        """The table's keys the load dropped that are not back (a table's end sent to the background may
        have failed to build them): for the caller to build now."""
        oid = self.oids.get(table)
        if oid not in self.unique_keys:
            return []
        self.unique_keys_pending.discard(oid)
        present = {name for _oid, name in self.execute(_KEYS_PRESENT_SQL, [[oid]]).fetchall()}
        return [key for key in self.unique_keys[oid] if key.name not in present]

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
        The primary and unique keys still dropped are those of tables the file brought no rows for."""
        with dangling_keys_reported(self.execute, self.schema, self.restorable):
            self.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # Only now: CREATE INDEX and ALTER TABLE refuse a table with checks still queued.
        # The keys first: the foreign keys need them.
        present = set(self.execute(_KEYS_PRESENT_SQL, [list(self.unique_keys)]).fetchall())
        for oid, keys in self.unique_keys.items():
            for key in keys:
                if (oid, key.name) not in present:
                    self.execute(key.statement)
        self.unique_keys_pending = set()
        for _index, definition, _table in self.indexes:
            self.execute(definition)
        with dangling_keys_reported(self.execute, self.schema, self.restorable):
            for statement in [*self.pending_statements, *map(self.add_key_sql, self.foreign_keys)]:
                self.execute(statement)
        self.execute("SET CONSTRAINTS ALL DEFERRED")


# The primary keys and unique constraints of the tables (oids) given.
_KEYS_PRESENT_SQL = "SELECT conrelid, conname FROM pg_constraint WHERE conrelid = ANY(%s::oid[]) AND contype IN ('p', 'u')"
