"""Realistic, deterministic clinic data for demos, tests and benchmarks.

Rows are inserted with bulk_create in large batches: scale 1 is about 4,500
rows, and a scale of a few hundred reaches a million rows in a few minutes.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Callable, Iterator

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from clinica.models import Cita, Factura, LineaFactura, Odontologo, Paciente, Pago, Radiografia, Tratamiento

BATCH_SIZE = 5000
NOMBRES = ["Ana", "Luis", "María", "Jorge", "Lucía", "Carlos", "Sofía", "Diego", "Valeria", "Andrés", "Camila", "Mateo"]
APELLIDOS = ["Rojas", "Flores", "Gutiérrez", "Vargas", "Mamani", "Quispe", "Fernández", "López", "Pérez", "Suárez"]
TRATAMIENTOS = [
    ("LIM", "Limpieza dental", "180.00", 40, {"incluye": ["profilaxis", "flúor"]}),
    ("EXT", "Extracción simple", "250.00", 30, {"anestesia": "local"}),
    ("END", "Endodoncia unirradicular", "950.50", 90, {"sesiones": 2}),
    ("RES", "Restauración con resina", "320.00", 45, {"material": "resina compuesta", "color": "A2"}),
    ("COR", "Corona de porcelana", "2400.00", 60, {"laboratorio": True, "sesiones": 3}),
    ("BLA", "Blanqueamiento", "1200.00", 60, {"tecnica": "consultorio"}),
    ("ORT", "Control de ortodoncia", "300.00", 30, {"mensual": True}),
    ("RXP", "Radiografía panorámica", "150.00", 15, {"digital": True}),
    ("SEL", "Sellante de fosas", "90.25", 20, {"por_pieza": True}),
    ("IMP", "Implante dental", "6500.00", 120, {"marca": "Straumann", "garantia_anios": 5}),
]


@dataclass(frozen=True)
class DemoCounts:
    pacientes: int
    odontologos: int
    citas: int
    facturas: int
    lineas: int
    pagos: int
    radiografias: int

    @classmethod
    def for_scale(cls, scale: float) -> "DemoCounts":
        def n(base: int) -> int:
            return max(1, int(base * scale))

        return cls(pacientes=n(500), odontologos=5, citas=n(1500), facturas=n(600), lineas=n(1200), pagos=n(600), radiografias=n(50))

    @property
    def total(self) -> int:
        return (
            self.pacientes + self.odontologos + self.citas + self.facturas + self.lineas + self.pagos
            + self.radiografias + len(TRATAMIENTOS)
        )


def _batched_create(model, rows, progress: Callable[[str, int, bool], None] | None) -> None:
    batch = []
    created = 0
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH_SIZE:
            model.objects.bulk_create(batch)
            created += len(batch)
            batch = []
            if progress:
                progress(model._meta.label, created, False)
    if batch:
        model.objects.bulk_create(batch)
        created += len(batch)
    if progress:
        progress(model._meta.label, created, True)


def clinic_fill(*, scale: float = 1, usuarios=(), seed: int = 7, progress: Callable[[str, int, bool], None] | None = None) -> DemoCounts:
    """Fill the current clinic's schema with demo data at the given scale."""
    # One generator for everything: the same seed gives the same rows only while
    # every helper below draws from it in this order.
    rng = random.Random(f"{seed}:{connection.schema_name}")
    counts = DemoCounts.for_scale(scale)
    now = timezone.now().replace(microsecond=0)
    usuarios = list(usuarios)

    tratamientos = Tratamiento.objects.bulk_create(
        [Tratamiento(codigo=c, nombre=n, precio=Decimal(p), duracion_minutos=d, detalles=det) for c, n, p, d, det in TRATAMIENTOS]
    )
    odontologos = Odontologo.objects.bulk_create(_odontologos(rng, counts, usuarios))
    _batched_create(Paciente, _pacientes(rng, counts, now), progress)
    paciente_ids = list(Paciente.objects.order_by("pk").values_list("pk", flat=True))
    # About one patient in ten was referred by another: a self-referencing foreign key.
    referidos = [Paciente(pk=pk, referido_por_id=rng.choice(paciente_ids)) for pk in paciente_ids[1::10]]
    Paciente.objects.bulk_update(referidos, ["referido_por"], batch_size=BATCH_SIZE)
    _batched_create(Cita, _citas(rng, counts, now, paciente_ids, odontologos, tratamientos, usuarios), progress)
    _batched_create(Factura, _facturas(rng, counts, now, paciente_ids), progress)
    factura_ids = list(Factura.objects.order_by("pk").values_list("pk", flat=True))
    _batched_create(LineaFactura, _lineas(rng, counts, factura_ids, tratamientos), progress)
    _batched_create(Pago, _pagos(rng, counts, now, factura_ids), progress)
    _batched_create(Radiografia, _radiografias(rng, counts, now, paciente_ids, _demo_files(counts)), progress)
    return counts


def _odontologos(rng: random.Random, counts: DemoCounts, usuarios: list) -> list[Odontologo]:
    odontologo_users = [u for u in usuarios if u.rol == "odontologo"]
    return [
        Odontologo(
            usuario=odontologo_users[i] if i < len(odontologo_users) else None,
            nombre=f"Dr(a). {rng.choice(NOMBRES)} {rng.choice(APELLIDOS)}",
            especialidad=rng.choice(["General", "Ortodoncia", "Endodoncia", "Periodoncia", "Implantología"]),
            matricula=f"MAT-{connection.schema_name[:6].upper()}-{i:04d}",
        )
        for i in range(counts.odontologos)
    ]


def _pacientes(rng: random.Random, counts: DemoCounts, now: datetime) -> Iterator[Paciente]:
    for i in range(counts.pacientes):
        nombre, apellido = rng.choice(NOMBRES), rng.choice(APELLIDOS)
        yield Paciente(
            nombre=nombre,
            apellido=f"{apellido} {rng.choice(APELLIDOS)}",
            documento=f"{1000000 + i}",
            fecha_nacimiento=date(1950, 1, 1) + timedelta(days=rng.randrange(0, 25000)),
            telefono=f"+591 7{rng.randrange(1000000, 9999999)}",
            email=f"{nombre.lower()}.{i}@correo.test".replace("í", "i").replace("á", "a").replace("é", "e"),
            direccion=f"Calle {rng.randrange(1, 400)} #{rng.randrange(1, 2000)}",
            alergias=rng.choice([[], [], ["penicilina"], ["látex"], ["anestesia con epinefrina", "ibuprofeno"]]),
            created_at=now - timedelta(days=rng.randrange(0, 1500), seconds=rng.randrange(0, 86400)),
        )


def _citas(
    rng: random.Random, counts: DemoCounts, now: datetime, paciente_ids: list[int],
    odontologos: list[Odontologo], tratamientos: list[Tratamiento], usuarios: list,
) -> Iterator[Cita]:
    for _ in range(counts.citas):
        tratamiento = rng.choice(tratamientos)
        yield Cita(
            paciente_id=rng.choice(paciente_ids),
            odontologo=rng.choice(odontologos),
            tratamiento=tratamiento if rng.random() < 0.8 else None,
            inicio=now + timedelta(days=rng.randrange(-700, 60), hours=rng.randrange(8, 19)),
            duracion_minutos=tratamiento.duracion_minutos,
            estado=rng.choice(Cita.Estado.values),
            motivo=rng.choice(["Dolor de muela", "Control", "Limpieza", "Sensibilidad", ""]),
            registrada_por=rng.choice(usuarios) if usuarios and rng.random() < 0.5 else None,
        )


def _facturas(rng: random.Random, counts: DemoCounts, now: datetime, paciente_ids: list[int]) -> Iterator[Factura]:
    prefix = connection.schema_name[:3].upper()
    for i in range(counts.facturas):
        yield Factura(
            numero=f"{prefix}-{i + 1:08d}",
            paciente_id=rng.choice(paciente_ids),
            fecha=(now - timedelta(days=rng.randrange(0, 700))).date(),
            estado=rng.choice(Factura.Estado.values),
            total=Decimal(rng.randrange(9000, 900000)) / 100,
            uuid=uuid.UUID(int=rng.getrandbits(128), version=4),
        )


def _lineas(
    rng: random.Random, counts: DemoCounts, factura_ids: list[int], tratamientos: list[Tratamiento]
) -> Iterator[LineaFactura]:
    for _ in range(counts.lineas):
        tratamiento = rng.choice(tratamientos)
        yield LineaFactura(
            factura_id=rng.choice(factura_ids),
            tratamiento=tratamiento,
            cantidad=rng.randrange(1, 4),
            precio_unitario=tratamiento.precio,
            pieza_dental=rng.choice([None, 11, 12, 21, 26, 36, 46, 48]),
        )


def _pagos(rng: random.Random, counts: DemoCounts, now: datetime, factura_ids: list[int]) -> Iterator[Pago]:
    for _ in range(counts.pagos):
        yield Pago(
            factura_id=rng.choice(factura_ids),
            monto=Decimal(rng.randrange(5000, 500000)) / 100,
            metodo=rng.choice(Pago.Metodo.values),
            pagado_en=now - timedelta(days=rng.randrange(0, 700), seconds=rng.randrange(0, 86400)),
            referencia=uuid.UUID(int=rng.getrandbits(128), version=4),
        )


def _demo_files(counts: DemoCounts) -> list[str]:
    """A handful of real files; the rest of the rows share them (metadata is what backups carry)."""
    file_names = []
    for i in range(min(counts.radiografias, 10)):
        name = f"{connection.schema_name}/radiografias/rx_{i:03d}.txt"
        if not default_storage.exists(name):
            name = default_storage.save(name, ContentFile(f"radiografía de demostración {i}\n".encode()))
        file_names.append(name)
    return file_names


def _radiografias(
    rng: random.Random, counts: DemoCounts, now: datetime, paciente_ids: list[int], file_names: list[str]
) -> Iterator[Radiografia]:
    for i in range(counts.radiografias):
        yield Radiografia(
            paciente_id=rng.choice(paciente_ids),
            archivo=file_names[i % len(file_names)],
            descripcion=rng.choice(["Panorámica", "Periapical", "Bite-wing", "Oclusal"]),
            tomada_en=(now - timedelta(days=rng.randrange(0, 900))).date(),
        )
