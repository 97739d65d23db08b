from rest_framework import serializers

from bitacora.models import Bitacora


class BitacoraSerializer(serializers.ModelSerializer):
    class Meta:
        model = Bitacora
        fields = [
            "id", "created_at", "actor_id", "actor_email", "action", "target_type",
            "target_id", "outcome", "details", "ip", "user_agent",
        ]


class BitacoraFilterSerializer(serializers.Serializer):
    action = serializers.CharField(required=False)
    desde = serializers.DateField(required=False)
    hasta = serializers.DateField(required=False)


class BitacoraListQuerySerializer(BitacoraFilterSerializer):
    # Bounded like the backup history's: DRF's paginator would take any limit and
    # silently ignore a malformed one.
    limit = serializers.IntegerField(min_value=1, max_value=500, required=False)
    offset = serializers.IntegerField(min_value=0, required=False)
