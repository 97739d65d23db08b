from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers


class ExportQuerySerializer(serializers.Serializer):
    compress = serializers.ChoiceField(choices=["gzip", "none"], required=False, default="none")


@extend_schema_serializer(component_name="RestoreUpload")  # not "RestoreRequestRequest"
class RestoreRequestSerializer(serializers.Serializer):
    backup_file = serializers.FileField(allow_empty_file=True)
    replace = serializers.BooleanField(required=False, default=False)
    dry_run = serializers.BooleanField(required=False, default=False)
    allow_other_tenant = serializers.BooleanField(required=False, default=False)


class ModelSummarySerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    deleted = serializers.IntegerField()


class RestoreResultSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    replace = serializers.BooleanField()
    dry_run = serializers.BooleanField()
    models = serializers.DictField(child=ModelSummarySerializer())
    skipped_models = serializers.ListField(child=serializers.CharField())
    duration_ms = serializers.IntegerField()
