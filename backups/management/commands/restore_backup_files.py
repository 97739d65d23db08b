import logging

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from backups.files.recover import PROBLEMS, Recovered, files_recover
from core.exceptions import DomainError

logger = logging.getLogger(__name__)


def _per_path(dry_run: bool) -> dict[Recovered, str]:
    return {
        Recovered.WRITTEN: _("se escribiría") if dry_run else _("escrito"),
        Recovered.PRESENT: _("ya estaba, con el mismo contenido"),
        Recovered.ABSENT: _("ya faltaba al hacer el backup: no hay nada que reponer"),
        Recovered.CONFLICT: _("conflicto: esa ruta tiene otro contenido y no se toca"),
        Recovered.MISSING_OBJECT: _("su contenido falta en el almacenamiento de backups"),
        Recovered.DAMAGED_OBJECT: _("su contenido en el almacenamiento de backups está dañado (sha256 distinto)"),
        Recovered.REFUSED: _("ruta rechazada: no está en la carpeta de la clínica"),
    }


def _totals(dry_run: bool) -> dict[Recovered, str]:
    return {
        Recovered.WRITTEN: _("se escribirían") if dry_run else _("escritos"),
        Recovered.PRESENT: _("ya estaban"),
        Recovered.CONFLICT: _("conflictos"),
        Recovered.MISSING_OBJECT: _("contenidos ausentes"),
        Recovered.DAMAGED_OBJECT: _("contenidos dañados"),
        Recovered.REFUSED: _("rutas rechazadas"),
        Recovered.ABSENT: _("ya faltaban al hacer el backup"),
    }


class Command(BaseCommand):
    help = _(
        "Repone los archivos de pacientes de un backup desde su lista (.files.jsonl.gz, junto al .sql.gz) "
        "sin usar la base de datos: para recuperar una clínica después de perder la base (primero "
        "gunzip | psql del dump). Sólo escribe rutas libres; nunca sobrescribe un archivo distinto."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--list", required=True, dest="list_key", metavar="CLAVE",
            help=_("Clave de la lista en el almacenamiento de backups, p. ej. "
                   "clinica_demo/automatic/backup_clinica_demo_2025-01-31_03-00-00.files.jsonl.gz."),
        )
        parser.add_argument(
            "--tenant", default="", metavar="ESQUEMA",
            help=_("La clínica cuyos archivos se reponen; por defecto, la primera carpeta de la clave. "
                   "La cabecera de la lista debe nombrarla."),
        )
        parser.add_argument("--dry-run", action="store_true", help=_("Sólo mostrar qué haría, sin escribir nada."))

    def handle(self, *args, list_key, tenant="", dry_run=False, verbosity=1, **options):
        labels = _per_path(dry_run)

        def report(path: str, outcome: Recovered) -> None:
            # A refused path may hold anything (a NUL, terminal escapes): shown escaped and cut.
            shown = ascii(path[:200]) if outcome == Recovered.REFUSED else path
            line = f"  {shown}: {labels[outcome]}"
            if outcome in PROBLEMS:
                self.stderr.write(line)
            elif dry_run or verbosity >= 2:
                self.stdout.write(line)

        try:
            result = files_recover(list_key=list_key, tenant=tenant, dry_run=dry_run, report=report)
        except DomainError as exc:
            details = exc.details or {}
            where = f" (línea {details['line']}: {details.get('error', '')})" if "line" in details else ""
            raise CommandError(f"{exc.message}{where}") from exc
        except Exception as exc:  # one clear line, never a traceback; the log has where it failed
            logger.exception("restore_backup_files %s failed", list_key)
            raise CommandError(_("Falló la reposición de archivos: %(error)s") % {"error": type(exc).__name__}) from exc
        header, counts = result.header, result.counts
        self.stdout.write(_("%(schema)s, %(file_name)s: %(count)s archivo(s) en la lista") % header)
        self.stdout.write("  " + ", ".join(f"{label}: {counts[outcome]}" for outcome, label in _totals(dry_run).items()))
        if result.problems:
            raise CommandError(_("%(count)s archivo(s) sin reponer (conflictos o contenidos ausentes o dañados); "
                                 "los demás están en su ruta.") % {"count": result.problems})
        if not dry_run:
            self.stdout.write(self.style.SUCCESS(_("  Cada archivo que guardó el backup está en su ruta.")))
