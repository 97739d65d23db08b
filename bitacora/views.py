from drf_spectacular.utils import extend_schema
from rest_framework.generics import ListAPIView

from bitacora.selectors import bitacora_list
from bitacora.serializers import BitacoraListQuerySerializer, BitacoraSerializer
from usuarios.permissions import IsAdminOrPropietario


class BitacoraListView(ListAPIView):
    """The clinic's audit log, newest first, paginated (?limit=&offset=)."""

    serializer_class = BitacoraSerializer
    permission_classes = [IsAdminOrPropietario]

    @extend_schema(parameters=[BitacoraListQuerySerializer])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        query = BitacoraListQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        filters = dict(query.validated_data)
        # Validated here, applied by the paginator from the query string.
        filters.pop("limit", None)
        filters.pop("offset", None)
        return bitacora_list(**filters)
