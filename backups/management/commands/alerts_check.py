import json

from django.core.management.base import BaseCommand

from alertas.nights import night_pings_retry
from alertas.services import alerts_flush
from backups.alerting import overdue_alerts


class Command(BaseCommand):
    help = (
        "Alertas sin worker: avisa de las clínicas sin backup completado en BACKUP_OVERDUE_AFTER_HOURS (una vez al día "
        "cada una), envía los resúmenes que tocan (--digest: todos ya) y reintenta los envíos y pings fallidos. "
        "Con Celery beat esto corre solo."
    )

    def add_arguments(self, parser):
        parser.add_argument("--digest", action="store_true", help="Enviar ya los resúmenes pendientes.")

    def handle(self, *args, digest=False, **options):
        overdue = overdue_alerts()
        sent = alerts_flush(digest_now=digest)
        self.stdout.write(json.dumps({"overdue": overdue, **sent, "pings": night_pings_retry()}, ensure_ascii=False))
