from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.utils import html

from backups.models import BackupRecord, RestoreJob
from usuarios.serializers import UsuarioResumenSerializer


class BackupRecordSerializer(serializers.ModelSerializer):
    """A backup as seed 000's front end reads it, plus status, checksum and manifest."""

    created_by = UsuarioResumenSerializer(read_only=True, allow_null=True)
    file_size_mb = serializers.FloatField(read_only=True)
    warnings = serializers.ListField(child=serializers.DictField(), read_only=True)
    warning = serializers.CharField(read_only=True, help_text="Las advertencias en una línea; vacío si no hay.")

    class Meta:
        model = BackupRecord
        fields = [
            "id", "file_name", "file_path", "file_size", "file_size_mb", "backup_type", "created_by", "created_at",
            "status", "sha256", "error", "error_code", "progress_bytes", "finished_at", "manifest", "keep", "integrity",
            "verified_at", "sql_sha256", "sql_size", "files_count", "files_size", "warnings", "warning",
        ]
        read_only_fields = fields


class BackupCreateSerializer(serializers.Serializer):
    # Automatic backups come from the cron job only, never from the API.
    backup_type = serializers.ChoiceField(choices=[BackupRecord.Type.MANUAL], default=BackupRecord.Type.MANUAL)


class BackupListQuerySerializer(serializers.Serializer):
    backup_type = serializers.ChoiceField(choices=BackupRecord.Type.choices, required=False)
    status = serializers.ChoiceField(choices=BackupRecord.Status.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=500, required=False)
    offset = serializers.IntegerField(min_value=0, required=False)


class BackupCreatedSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()
    backup = BackupRecordSerializer()


class StrictBooleanField(serializers.BooleanField):
    """Only true/false: DRF's BooleanField would also take "yes", "0" or 1.

    In JSON, only the JSON booleans. A form (multipart or urlencoded) carries
    nothing but strings, so there "true" and "false" are the booleans; and a
    missing field is missing, not false (DRF's HTML-checkbox convention would
    make an empty form set keep=false).
    """

    default_empty_html = empty
    FORM_VALUES = {"true": True, "false": False}

    def get_value(self, dictionary):
        value = super().get_value(dictionary)
        if html.is_html_input(dictionary) and isinstance(value, str):
            return self.FORM_VALUES.get(value, value)
        return value

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class BackupKeepSerializer(serializers.Serializer):
    keep = StrictBooleanField(help_text="true: la política de retención nunca borra este backup.")


class ClinicSchemaNameField(serializers.CharField):
    """A clinic's schema name typed by hand as a confirmation (the service compares it); the
    OpenAPI served for a clinic gives its one value (core.openapi.ClinicSchemaNameScheme)."""


class BackupRestoreSerializer(serializers.Serializer):
    confirm = ClinicSchemaNameField(help_text="El nombre del esquema de la clínica, como confirmación.")


class RestoreJobSerializer(serializers.ModelSerializer):
    """A restore as a front end polls it: status, phase, progress, times, error."""

    backup_id = serializers.IntegerField(read_only=True, allow_null=True)
    warnings = serializers.ListField(child=serializers.DictField(), read_only=True)
    warning = serializers.CharField(read_only=True, help_text="Las advertencias en una línea; vacío si no hay.")

    class Meta:
        model = RestoreJob
        fields = [
            "id", "backup_id", "backup_file_name", "kind", "new_schema", "status", "phase", "progress_bytes",
            "total_bytes", "created_at", "started_at", "finished_at", "error_code", "error", "warnings", "warning",
        ]
        read_only_fields = fields


class BackupRestoredSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField()
    backup = BackupRecordSerializer()
    restore = RestoreJobSerializer()


class BackupInProgressSerializer(serializers.Serializer):
    """202: the job goes on; poll the `Location` (the backup record) until its status settles."""

    success = serializers.BooleanField()
    message = serializers.CharField()
    backup = BackupRecordSerializer()


class RestoreInProgressSerializer(serializers.Serializer):
    """202: the restore goes on; poll the `Location` (the restore job) until its status settles."""

    success = serializers.BooleanField()
    message = serializers.CharField()
    restore = RestoreJobSerializer()
