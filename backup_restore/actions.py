"""The audit-log actions of the JSON export and restore, one name each."""
from enum import StrEnum


class TenantDataAction(StrEnum):
    EXPORT = "tenant_data.export"
    RESTORE = "tenant_data.restore"
