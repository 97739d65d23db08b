from django.apps import AppConfig


class ClinicaConfig(AppConfig):
    name = "clinica"
    verbose_name = "Clínica"
