import json

from django.core.management.base import BaseCommand

from backups.jobs.reaper import reap


class Command(BaseCommand):
    help = (
        "Limpia lo que dejaron operaciones interrumpidas (un proceso muerto a mitad de un backup o una "
        "restauración): esquemas temporales, archivos temporales y registros que quedaron «en curso»."
    )

    def handle(self, *args, **options):
        report = reap()
        self.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
