from django.contrib.auth.base_user import BaseUserManager
from django.contrib.auth.models import AbstractBaseUser, PermissionsMixin
from django.db import models
from django.utils import timezone


class Rol(models.TextChoices):
    ADMIN = "admin", "Administrador"
    PROPIETARIO = "propietario", "Propietario"
    ODONTOLOGO = "odontologo", "Odontólogo"
    RECEPCION = "recepcion", "Recepción"
    ASISTENTE = "asistente", "Asistente"


# Roles that may manage backups, restores and read the audit log.
ROLES_ADMINISTRATIVOS = frozenset({Rol.ADMIN, Rol.PROPIETARIO})
# Roles that may open a patient's files (radiographs): health data, for those who treat the
# patient or answer for the clinic; not reception or assistants.
ROLES_CLINICOS = frozenset({Rol.ADMIN, Rol.PROPIETARIO, Rol.ODONTOLOGO})


class UsuarioManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email, password=None, **extra_fields):
        if not email:
            raise ValueError("El email es obligatorio.")
        user = self.model(email=self.normalize_email(email).lower(), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        extra_fields.setdefault("rol", Rol.ADMIN)
        return self.create_user(email, password, **extra_fields)


class Usuario(AbstractBaseUser, PermissionsMixin):
    """A person who logs in: a platform operator (public schema) or clinic staff (tenant schema)."""

    email = models.EmailField(unique=True)
    nombre = models.CharField(max_length=100, blank=True)
    apellido = models.CharField(max_length=100, blank=True)
    rol = models.CharField(max_length=20, choices=Rol.choices, default=Rol.RECEPCION)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UsuarioManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["nombre", "apellido"]

    class Meta:
        verbose_name = "usuario"
        verbose_name_plural = "usuarios"
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    @property
    def es_administrativo(self) -> bool:
        return self.rol in ROLES_ADMINISTRATIVOS

    @property
    def ve_archivos_de_pacientes(self) -> bool:
        return self.rol in ROLES_CLINICOS
