from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from clinica import models
from core.patient_files_admin import PatientFilesAdminMixin


@admin.register(models.Paciente)
class PacienteAdmin(admin.ModelAdmin):
    list_display = ("apellido", "nombre", "documento", "telefono", "activo")
    search_fields = ("apellido", "nombre", "documento")
    list_filter = ("activo",)
    raw_id_fields = ("referido_por",)


@admin.register(models.Odontologo)
class OdontologoAdmin(admin.ModelAdmin):
    list_display = ("nombre", "especialidad", "matricula", "activo")
    search_fields = ("nombre", "matricula")


@admin.register(models.Tratamiento)
class TratamientoAdmin(admin.ModelAdmin):
    list_display = ("codigo", "nombre", "precio", "duracion_minutos")
    search_fields = ("codigo", "nombre")


@admin.register(models.Cita)
class CitaAdmin(admin.ModelAdmin):
    list_display = ("inicio", "paciente", "odontologo", "estado")
    list_filter = ("estado", "odontologo")
    raw_id_fields = ("paciente",)
    date_hierarchy = "inicio"


class LineaFacturaInline(admin.TabularInline):
    model = models.LineaFactura
    extra = 0


class PagoInline(admin.TabularInline):
    model = models.Pago
    extra = 0


@admin.register(models.Factura)
class FacturaAdmin(admin.ModelAdmin):
    list_display = ("numero", "paciente", "fecha", "estado", "total")
    list_filter = ("estado",)
    search_fields = ("numero",)
    raw_id_fields = ("paciente",)
    inlines = [LineaFacturaInline, PagoInline]


@admin.register(models.Radiografia)
class RadiografiaAdmin(PatientFilesAdminMixin, admin.ModelAdmin):
    list_display = ("paciente", "descripcion", "tomada_en", "archivo_enlace")
    raw_id_fields = ("paciente",)

    @admin.display(description=_("Archivo"))
    def archivo_enlace(self, obj: models.Radiografia) -> str:
        return self.patient_file_anchor(obj, "archivo")
