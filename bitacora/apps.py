from django.apps import AppConfig


class BitacoraConfig(AppConfig):
    name = "bitacora"
    verbose_name = "Bitácora"
