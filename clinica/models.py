"""A small dental-clinic domain, so that backups hold real, related data."""
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Paciente(models.Model):
    nombre = models.CharField(max_length=100)
    apellido = models.CharField(max_length=100)
    documento = models.CharField(max_length=20, unique=True)
    fecha_nacimiento = models.DateField(null=True, blank=True)
    telefono = models.CharField(max_length=30, blank=True)
    email = models.EmailField(blank=True)
    direccion = models.CharField(max_length=200, blank=True)
    alergias = models.JSONField(default=list, blank=True)
    referido_por = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="referidos")
    activo = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["apellido", "nombre"]

    def __str__(self) -> str:
        return f"{self.apellido}, {self.nombre}"


class Odontologo(models.Model):
    usuario = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="odontologo"
    )
    nombre = models.CharField(max_length=150)
    especialidad = models.CharField(max_length=100, blank=True)
    matricula = models.CharField(max_length=30, unique=True)
    activo = models.BooleanField(default=True)

    class Meta:
        verbose_name = "odontólogo"
        verbose_name_plural = "odontólogos"

    def __str__(self) -> str:
        return self.nombre


class Tratamiento(models.Model):
    codigo = models.CharField(max_length=20, unique=True)
    nombre = models.CharField(max_length=150)
    precio = models.DecimalField(max_digits=10, decimal_places=2)
    duracion_minutos = models.PositiveIntegerField(default=30)
    detalles = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.codigo} {self.nombre}"


class Cita(models.Model):
    class Estado(models.TextChoices):
        PROGRAMADA = "programada", "Programada"
        CONFIRMADA = "confirmada", "Confirmada"
        ATENDIDA = "atendida", "Atendida"
        CANCELADA = "cancelada", "Cancelada"

    paciente = models.ForeignKey(Paciente, on_delete=models.CASCADE, related_name="citas")
    odontologo = models.ForeignKey(Odontologo, on_delete=models.PROTECT, related_name="citas")
    tratamiento = models.ForeignKey(Tratamiento, null=True, blank=True, on_delete=models.SET_NULL)
    inicio = models.DateTimeField()
    duracion_minutos = models.PositiveIntegerField(default=30)
    estado = models.CharField(max_length=12, choices=Estado.choices, default=Estado.PROGRAMADA)
    motivo = models.TextField(blank=True)
    registrada_por = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-inicio"]
        # The agenda: a dentist's appointments by time.
        indexes = [models.Index(fields=["odontologo", "inicio"], name="cita_agenda_idx")]


class Factura(models.Model):
    class Estado(models.TextChoices):
        BORRADOR = "borrador", "Borrador"
        EMITIDA = "emitida", "Emitida"
        PAGADA = "pagada", "Pagada"
        ANULADA = "anulada", "Anulada"

    numero = models.CharField(max_length=20, unique=True)
    paciente = models.ForeignKey(Paciente, on_delete=models.PROTECT, related_name="facturas")
    fecha = models.DateField()
    estado = models.CharField(max_length=10, choices=Estado.choices, default=Estado.EMITIDA)
    total = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        ordering = ["-fecha", "-numero"]


class LineaFactura(models.Model):
    factura = models.ForeignKey(Factura, on_delete=models.CASCADE, related_name="lineas")
    tratamiento = models.ForeignKey(Tratamiento, on_delete=models.PROTECT)
    cantidad = models.PositiveIntegerField(default=1)
    precio_unitario = models.DecimalField(max_digits=10, decimal_places=2)
    pieza_dental = models.PositiveSmallIntegerField(null=True, blank=True)


class Pago(models.Model):
    class Metodo(models.TextChoices):
        EFECTIVO = "efectivo", "Efectivo"
        TARJETA = "tarjeta", "Tarjeta"
        TRANSFERENCIA = "transferencia", "Transferencia"
        QR = "qr", "QR"

    factura = models.ForeignKey(Factura, on_delete=models.CASCADE, related_name="pagos")
    monto = models.DecimalField(max_digits=12, decimal_places=2)
    metodo = models.CharField(max_length=15, choices=Metodo.choices)
    pagado_en = models.DateTimeField()
    referencia = models.UUIDField(default=uuid.uuid4, editable=False)


def radiografia_upload_to(instance, filename: str) -> str:
    from django.db import connection

    # The clinic in the key, not in the storage location: the location would be
    # computed once, outside any request.
    return f"{connection.schema_name}/radiografias/{filename}"


class Radiografia(models.Model):
    paciente = models.ForeignKey(Paciente, on_delete=models.CASCADE, related_name="radiografias")
    archivo = models.FileField(upload_to=radiografia_upload_to)
    descripcion = models.CharField(max_length=200, blank=True)
    tomada_en = models.DateField()
