import importlib

Migration = importlib.import_module("clinica.migrations.0002_cita_agenda_index").Migration
