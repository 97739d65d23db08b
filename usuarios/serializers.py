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
