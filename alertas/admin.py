from django.contrib import admin

from alertas.models import Alert, AlertMessage, NightRun


class ReadOnlyAdmin(admin.ModelAdmin):
    """What was raised and sent is a record: operators read it, nobody edits it here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "kind", "clinic", "schema", "delivery", "repeats", "resolved_at")
    list_filter = ("kind", "delivery", "day")
    search_fields = ("schema", "clinic")


@admin.register(AlertMessage)
class AlertMessageAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "subject", "digest", "email_state", "webhook_state", "attempts", "last_error")
    list_filter = ("kind", "email_state", "webhook_state")


@admin.register(NightRun)
class NightRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "expected", "finished_at", "outcome", "failed", "ping_pending")
