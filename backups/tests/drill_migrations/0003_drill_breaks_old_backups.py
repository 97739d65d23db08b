"""A rule the live clinic meets (its data was cleaned up) and an old backup does not: applying
it to that backup's rows fails, as a real migration that breaks old backups would."""
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("clinica", "0002_cita_agenda_index")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE clinica_paciente ADD CONSTRAINT drill_sin_viejos CHECK (nombre <> 'Viejo')",
            reverse_sql="ALTER TABLE clinica_paciente DROP CONSTRAINT drill_sin_viejos",
        ),
    ]
