"""Export and restore of a clinic's data: the lock, the audit entry, the file name around utils."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

from django.db import connection

from backup_restore import utils
from backup_restore.actions import TenantDataAction
from bitacora.services import AuditContext, audit_failure, record, record_failure
from core.exceptions import DomainError
from core.faults import kill_point
from core.files import file_name_timestamp
from core.locks import tenant_operation_lock

logger = logging.getLogger(__name__)


@dataclass
class TenantExport:
    file_name: str
    content_type: str
    chunks: "_AuditedExport"


class _AuditedExport:
    """The export's chunks; holds the clinic's lock until the last one is sent (or the client leaves)
    and then writes the audit entry. `close()` is called by StreamingHttpResponse."""

    def __init__(self, *, chunks: Iterator[bytes], release: Callable[[], None], finish: Callable[[BaseException | None], None]):
        self._chunks = chunks
        self._release = release
        self._finish = finish
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        except BaseException as exc:
            self._end(exc)
            raise
        self._end(None)

    def _end(self, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        close = getattr(self._chunks, "close", None)
        if close:
            close()  # leaves the snapshot transaction before the lock is released
        self._release()
        self._finish(exc)

    def close(self) -> None:
        if not self._done:
            self._end(ConnectionAbortedError("La descarga se interrumpió antes de terminar."))


def tenant_data_export_file_name(*, schema_name: str, compress: bool) -> str:
    stamp = file_name_timestamp()
    return f"backup_{schema_name}_{stamp}.json{'.gz' if compress else ''}"


def tenant_data_export(
    *, context: AuditContext, compress: bool = False, progress: utils.ProgressCallback | None = None
) -> TenantExport:
    """Start a streamed export of the current clinic (409 if a backup or restore is running)."""
    tenant = connection.tenant
    schema_name = tenant.schema_name
    file_name = tenant_data_export_file_name(schema_name=schema_name, compress=compress)
    lock = tenant_operation_lock(schema_name)
    with audit_failure(context=context, action=TenantDataAction.EXPORT, target_type="tenant", target_id=schema_name,
                       details={"file_name": file_name}):
        lock.__enter__()
    stats: dict[str, Any] = {}
    chunks = utils.tenant_data_export_chunks(schema_name=schema_name, tenant_name=tenant.nombre, progress=progress, stats=stats)
    if compress:
        chunks = utils.gzip_chunks(chunks)

    def finish(exc: BaseException | None) -> None:
        details = {"file_name": file_name, "compress": compress, "models": stats.get("models", {}), "bytes": stats.get("bytes")}
        if exc is None:
            record(context=context, action=TenantDataAction.EXPORT, target_type="tenant", target_id=schema_name, details=details)
        else:
            logger.warning("export of %s failed: %s", schema_name, type(exc).__name__)
            record_failure(context=context, action=TenantDataAction.EXPORT, error=exc, target_type="tenant",
                           target_id=schema_name, details=details)

    return TenantExport(
        file_name=file_name,
        content_type="application/gzip" if compress else "application/json",
        chunks=_AuditedExport(chunks=chunks, release=lambda: lock.__exit__(None, None, None), finish=finish),
    )


def tenant_data_restore(
    *,
    context: AuditContext,
    source: BinaryIO,
    file_name: str = "",
    replace: bool = False,
    dry_run: bool = False,
    allow_other_tenant: bool = False,
    progress: utils.ProgressCallback | None = None,
) -> utils.RestoreResult:
    """Restore a backup file into the current clinic, all or nothing; always audited."""
    schema_name = connection.schema_name
    details: dict[str, Any] = {"file_name": file_name, "replace": replace, "dry_run": dry_run,
                               "allow_other_tenant": allow_other_tenant}
    # bitacora writes on its own connection: the entry of a failed restore survives the rollback.
    def loading(label: str, done: int, total: int | None) -> None:
        kill_point("json_restore.loading")  # inside the restore's transaction, rows already written
        if progress:
            progress(label, done, total)

    with tenant_data_restore_audited(context=context, details=details):
        with tenant_operation_lock(schema_name):
            try:
                result = utils.tenant_data_import(
                    source=source, schema_name=schema_name, replace=replace, dry_run=dry_run,
                    allow_other_tenant=allow_other_tenant, progress=loading,
                )
            except DomainError as exc:
                # The code, model and key of a refused row; never its values (they are patient data).
                logger.info("restore of %s refused: %s model=%.100s pk=%.40s", schema_name, exc.code,
                            exc.details.get("model"), exc.details.get("pk"))
                raise
    summary = result.as_dict()
    record(context=context, action=TenantDataAction.RESTORE, target_type="tenant", target_id=schema_name,
           details={**details, "source_tenant": result.source_tenant, "models": summary["models"],
                    "skipped_models": summary["skipped_models"], "duration_ms": result.duration_ms})
    return result


def tenant_data_restore_audited(*, context: AuditContext, details: dict | None = None):
    """Audit whatever refuses or fails a restore of the current clinic, from the upload's checks on."""
    return audit_failure(context=context, action=TenantDataAction.RESTORE, target_type="tenant",
                         target_id=connection.schema_name, details=details)
