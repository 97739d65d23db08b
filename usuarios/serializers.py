from rest_framework import serializers

from usuarios.models import Usuario


class UsuarioResumenSerializer(serializers.ModelSerializer):
    """The user as the front end shows it (seed 000's `created_by`)."""

    class Meta:
        model = Usuario
        fields = ["id", "email", "nombre", "apellido"]


class MeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Usuario
        fields = ["id", "email", "nombre", "apellido", "rol"]


class TokenPairSerializer(serializers.Serializer):
    """POST /api/auth/token/'s answer (simplejwt's serializer describes only what it takes)."""

    access = serializers.CharField(help_text="JWT de acceso: Authorization: Bearer <access>.")
    refresh = serializers.CharField(help_text="JWT para POST /api/auth/token/refresh/.")


class AccessTokenSerializer(serializers.Serializer):
    """POST /api/auth/token/refresh/'s answer: a new access token (refresh tokens are not rotated)."""

    access = serializers.CharField(help_text="JWT de acceso nuevo.")
