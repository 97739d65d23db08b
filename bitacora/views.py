from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView

from bitacora.selectors import bitacora_list
from bitacora.serializers import BitacoraFilterSerializer, BitacoraSerializer
from usuarios.permissions import IsAdminOrPropietario


class BitacoraListView(ListAPIView):
    """The clinic's audit log, newest first, paginated (?limit=&offset=)."""

    serializer_class = BitacoraSerializer
    permission_classes = [IsAdminOrPropietario]

    @extend_schema(parameters=[BitacoraFilterSerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = BitacoraFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return bitacora_list(**filters.validated_data)
