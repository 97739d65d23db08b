import importlib

Migration = importlib.import_module("clinica.migrations.0001_initial").Migration
