from datetime import timedelta

from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_duration

from backups.selectors import backup_is_overdue, backup_last_completed
from core.management.base import TenantCommand

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _max_age(text: str) -> timedelta:
    """26h, 90m, 2d, or anything Django's parse_duration reads (HH:MM:SS)."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in UNITS:
        return timedelta(seconds=int(text[:-1]) * UNITS[text[-1]])
    parsed = parse_duration(text)
    if parsed is None:
        raise CommandError(f"--max-age no válido: {text!r} (ejemplos: 26h, 90m, 2d)")
    return parsed


class Command(TenantCommand):
    help = (
        "Dice qué clínicas no tienen un backup completado dentro de --max-age (por defecto 26h), o cuyo último "
        "backup completado tiene advertencias (archivos rechazados o no encontrados), y termina con código ≠ 0 "
        "si alguna está así: para alertas."
    )

    def add_tenant_arguments(self, parser):
        parser.add_argument("--max-age", default="26h", help="Antigüedad máxima del último backup completado (26h, 90m, 2d).")

    def handle(self, *args, max_age: str, **options):
        self.window = _max_age(max_age)
        self.now = timezone.now()
        self.overdue: list[str] = []
        self.incomplete: list[str] = []
        super().handle(*args, **options)
        problems = []
        if self.overdue:
            problems.append(f"{len(self.overdue)} clínica(s) sin backup completado en {max_age}: {', '.join(self.overdue)}")
        if self.incomplete:
            problems.append(f"{len(self.incomplete)} clínica(s) cuyo último backup no guarda todos sus archivos: "
                            f"{', '.join(self.incomplete)}")
        if problems:
            raise CommandError("; ".join(problems))

    def handle_tenant(self, tenant, **options):
        last = backup_last_completed()
        if backup_is_overdue(last_completed_at=last.created_at if last else None, clinic_created_at=tenant.created_at,
                             now=self.now, after=self.window):
            self.overdue.append(tenant.schema_name)
            when = f"último {last.created_at:%Y-%m-%d %H:%M:%S}" if last else "nunca"
            self.stdout.write(f"  ATRASADA {tenant.schema_name}: {when}")
        elif last is None:  # a clinic younger than the window has until then for its first backup
            self.stdout.write(f"  ok {tenant.schema_name}: sin backups todavía (clínica creada {tenant.created_at:%Y-%m-%d %H:%M})")
        elif last.warnings:
            self.incomplete.append(tenant.schema_name)
            self.stdout.write(f"  INCOMPLETO {tenant.schema_name}: último {last.created_at:%Y-%m-%d %H:%M:%S} ({last.warning})")
        else:
            self.stdout.write(f"  ok {tenant.schema_name}: último {last.created_at:%Y-%m-%d %H:%M:%S} ({last.file_size_mb} MB)")
