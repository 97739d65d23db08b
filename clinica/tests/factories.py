"""factory-boy factories for the sample clinic data that backups carry."""
import datetime
from decimal import Decimal

import factory
from django.utils import timezone

from clinica.models import Cita, Factura, LineaFactura, Odontologo, Paciente, Pago, Radiografia, Tratamiento


class PacienteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Paciente

    nombre = factory.Sequence(lambda n: f"Paciente{n}")
    apellido = "Quispe Mamani"
    documento = factory.Sequence(lambda n: f"DOC-{n:07d}")
    fecha_nacimiento = datetime.date(1988, 2, 29)
    telefono = "+591 70000000"
    email = factory.Sequence(lambda n: f"paciente{n}@correo.test")
    direccion = 'Calle "Sucre" #12\\b\ttab\nlínea'
    alergias = factory.LazyFunction(lambda: ["penicilina", {"severidad": 2.5, "notas": None}])


class OdontologoFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Odontologo

    nombre = factory.Sequence(lambda n: f"Dra. Odontóloga {n}")
    especialidad = "Endodoncia"
    matricula = factory.Sequence(lambda n: f"MAT-{n:05d}")


class TratamientoFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tratamiento

    codigo = factory.Sequence(lambda n: f"T{n:04d}")
    nombre = "Endodoncia unirradicular"
    precio = Decimal("950.55")
    duracion_minutos = 90
    detalles = factory.LazyFunction(lambda: {"sesiones": 2, "precio_base": 0.1, "anidado": {"lista": [1, "dos", True]}})


class CitaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Cita

    paciente = factory.SubFactory(PacienteFactory)
    odontologo = factory.SubFactory(OdontologoFactory)
    tratamiento = factory.SubFactory(TratamientoFactory)
    inicio = factory.LazyFunction(lambda: timezone.now().replace(microsecond=123456))
    motivo = "Dolor de muela"


class FacturaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Factura

    numero = factory.Sequence(lambda n: f"F-{n:08d}")
    paciente = factory.SubFactory(PacienteFactory)
    fecha = datetime.date(2025, 12, 31)
    total = Decimal("1234567890.12")


class LineaFacturaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LineaFactura

    factura = factory.SubFactory(FacturaFactory)
    tratamiento = factory.SubFactory(TratamientoFactory)
    cantidad = 2
    precio_unitario = Decimal("0.01")
    pieza_dental = 36


class PagoFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pago

    factura = factory.SubFactory(FacturaFactory)
    monto = Decimal("99.90")
    metodo = Pago.Metodo.QR
    pagado_en = factory.LazyFunction(lambda: datetime.datetime(2025, 3, 9, 23, 59, 59, 999999, tzinfo=datetime.timezone.utc))


class RadiografiaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Radiografia

    paciente = factory.SubFactory(PacienteFactory)
    archivo = factory.Sequence(lambda n: f"test_a/radiografias/rx_{n}.png")  # the stored name only
    descripcion = "Periapical"
    tomada_en = datetime.date(2024, 1, 15)


def clinic_data_create(*, usuario=None) -> dict:
    """A small clinic: every model, a self-reference, a user reference, odd values."""
    referente = PacienteFactory()
    paciente = PacienteFactory(referido_por=referente, fecha_nacimiento=None, alergias=[])
    odontologo = OdontologoFactory(usuario=usuario)
    tratamiento = TratamientoFactory()
    citas = [
        CitaFactory(paciente=paciente, odontologo=odontologo, tratamiento=tratamiento, registrada_por=usuario),
        CitaFactory(paciente=referente, odontologo=odontologo, tratamiento=None),
    ]
    factura = FacturaFactory(paciente=paciente)
    LineaFacturaFactory(factura=factura, tratamiento=tratamiento)
    LineaFacturaFactory(factura=factura, tratamiento=tratamiento, pieza_dental=None)
    pagos = [PagoFactory(factura=factura), PagoFactory(factura=factura, monto=Decimal("0.00"))]
    RadiografiaFactory(paciente=paciente)
    return {"paciente": paciente, "referente": referente, "citas": citas, "factura": factura, "pagos": pagos,
            "tratamiento": tratamiento, "odontologo": odontologo}
