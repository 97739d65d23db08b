from django.urls import path

from bitacora.views import BitacoraListView

app_name = "bitacora"

urlpatterns = [path("", BitacoraListView.as_view(), name="list")]
