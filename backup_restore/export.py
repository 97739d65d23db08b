"""The clinic's data as one JSON document, streamed in chunks from one consistent snapshot.

PostgreSQL renders each row as a JSON array (`json_build_array`), read through a
server-side cursor in one REPEATABLE READ snapshot; Python only joins lines, so
memory stays bounded whatever the size of the clinic. The format is documented
in README ("Formato del respaldo JSON").
"""
from __future__ import annotations

import json
from contextlib import closing
from typing import Iterator

from django.db import connection, transaction
from django.utils import timezone

from backup_restore.classification import Policy
from backup_restore.plan import FORMAT_NAME, FORMAT_VERSION, ModelPlan, ProgressCallback, models_plan, qn
from core.parallel_gzip import ParallelGzipWriter
from core.selectors import migration_state

EXPORT_FETCH_ROWS = 10_000
EXPORT_FLUSH_CHARS = 1 << 20
GZIP_LEVEL = 3


def _row_json_sql(schema_name: str, plan: ModelPlan) -> str:
    columns = [f"t.{qn(f.column)}" for f in plan.fields]
    if len(columns) <= 100:  # a function takes at most 100 arguments
        expression = f"json_build_array({', '.join(columns)})::text"
    else:
        parts = ", ".join(f"coalesce(to_json({c})::text, 'null')" for c in columns)
        expression = f"'[' || array_to_string(ARRAY[{parts}], ',') || ']'"
    return (
        f"SELECT {expression} FROM {qn(schema_name)}.{qn(plan.table)} t ORDER BY t.{qn(plan.pk.column)}"
    )


def tenant_data_export_chunks(
    *, schema_name: str, tenant_name: str, progress: ProgressCallback | None = None, stats: dict | None = None
) -> Iterator[bytes]:
    """The clinic's data as UTF-8 JSON, in chunks, from one consistent snapshot."""
    everything = models_plan()
    plans = [p for p in everything if p.policy is not Policy.EXCLUDED]
    excluded = {p.label: p.reason for p in everything if p.policy is Policy.EXCLUDED}
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            if outermost:  # counts and rows from the same snapshot
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            counts = _row_counts(cursor, schema_name, plans)
        for plan in plans:
            if plan.label not in counts:
                excluded[plan.label] = "La tabla no existe en esta clínica (migración pendiente)."
        plans = [p for p in plans if p.label in counts]
        yield _header_chunk(schema_name, tenant_name, plans, counts, excluded)
        raw = connection.connection  # psycopg2: a named cursor is a server-side cursor
        written = 0
        for index, plan in enumerate(plans):
            # closing(): a download abandoned mid-section closes its server-side cursor inside the snapshot.
            with closing(_section_chunks(raw, schema_name, plan, index, counts[plan.label], progress, stats)) as section:
                for chunk in section:
                    written += len(chunk)
                    yield chunk
        yield b"\n]}\n"
    if stats is not None:
        stats["bytes"] = written


def _row_counts(cursor, schema_name: str, plans: list[ModelPlan]) -> dict[str, int]:
    """Rows per model whose table exists in this schema (a migration not applied here yet leaves one out)."""
    counts = {}
    for plan in plans:
        cursor.execute("SELECT to_regclass(%s)", [f"{qn(schema_name)}.{qn(plan.table)}"])
        if cursor.fetchone()[0] is None:
            continue
        cursor.execute(f"SELECT count(*) FROM {qn(schema_name)}.{qn(plan.table)}")
        counts[plan.label] = cursor.fetchone()[0]
    return counts


def _header_chunk(schema_name: str, tenant_name: str, plans: list[ModelPlan], counts: dict, excluded: dict) -> bytes:
    """Every top-level key, then the opening of `data`: a reader learns what the file holds before any row."""
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "tenant": {"schema": schema_name, "name": tenant_name},
        "created_at": timezone.now().isoformat(),
        "migrations": migration_state(),
        "models": {p.label: {"count": counts[p.label], "restore": p.policy is Policy.RESTORE} for p in plans},
        "excluded": excluded,
    }
    head = json.dumps(header, ensure_ascii=False, indent=1)
    return (head[:-2] + ',\n "data": [').encode()


def _section_chunks(
    raw, schema_name: str, plan: ModelPlan, index: int, count: int, progress: ProgressCallback | None, stats: dict | None
) -> Iterator[bytes]:
    """One model's section, its rows as PostgreSQL renders them, flushed about every EXPORT_FLUSH_CHARS."""
    section = {"model": plan.label, "fields": [f.attname for f in plan.fields]}
    buffer = [("\n" if index == 0 else ",\n") + json.dumps(section, ensure_ascii=False)[:-1] + ', "rows": [']
    size = 0
    rows_done = 0
    with raw.cursor(name=f"backup_restore_export_{index}") as named:
        named.itersize = EXPORT_FETCH_ROWS
        named.execute(_row_json_sql(schema_name, plan))
        while batch := named.fetchmany(EXPORT_FETCH_ROWS):
            text = ",\n".join([r[0] for r in batch])
            buffer.append(("\n" if rows_done == 0 else ",\n") + text)
            size += len(text)
            rows_done += len(batch)
            if size >= EXPORT_FLUSH_CHARS:
                yield "".join(buffer).encode()
                buffer, size = [], 0
                if progress:
                    progress(plan.label, rows_done, count)
    buffer.append("]}")
    yield "".join(buffer).encode()
    if progress:
        progress(plan.label, rows_done, count)
    if stats is not None:
        stats.setdefault("models", {})[plan.label] = rows_done


class _Collected:
    """A destination that keeps what is written until it is taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def take(self) -> bytes:
        taken = b"".join(self._parts)
        self._parts.clear()
        return taken


def gzip_chunks(chunks: Iterator[bytes], level: int = GZIP_LEVEL) -> Iterator[bytes]:
    """chunks as one gzip member, compressed on BACKUP_COMPRESS_WORKERS threads (core.parallel_gzip)."""
    collected = _Collected()
    try:
        # Closed early (a download abandoned), the with block stops the threads.
        with ParallelGzipWriter(collected, level=level) as compressed:
            for chunk in chunks:
                compressed.write(chunk)
                if taken := collected.take():
                    yield taken
        yield collected.take()
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()  # a generator's snapshot ends with the download, as it does uncompressed
