"""The admin's link to a patient file: streamed by the clinic's own admin, to the roles that may see it.

A patient file is health data. Django's admin links a FileField to its storage's url(): on
disk a public path under MEDIA_URL (which nothing serves, and which would skip every check
if something did), on Supabase none at all (url() is unsupported: the change page failed),
on S3 a presigned URL, a bearer link that ends up in browser history, proxies' logs and
Referer headers and opens the file for anyone until it expires. Instead, every file field
of a ModelAdmin with PatientFilesAdminMixin links to a view of that clinic's admin:
1. behind the admin's login, whose session is the clinic's own (sessions live in each
   clinic's schema; a clinic reached by path has cookies named for it);
2. the row is looked up in the clinic of the request: a pk is a row of this clinic or none;
3. the user's role must allow patient files (usuarios.permissions.puede_ver_archivos_de_pacientes),
   besides view access to the row;
4. the row's name must lie under the clinic's folder (core.media_names): a name planted
   by other means (SQL, an old import) is refused unread, as if the file were missing;
5. the file streams from the media storage with bounded memory (on Supabase through a
   60-second signed URL the server uses and the browser never sees), private and never
   stored by a cache; shown in the browser only when it is an image of a known type, any
   other content a download, and sandboxed either way.
Every attempt on a row (opened, refused by role, refused or missing name) is written to the
clinic's bitácora as `patient_file.open`, with who, from where, the row and the field: who saw
which patient's files is part of the record a clinic keeps.
"""
from __future__ import annotations

import mimetypes
import posixpath

from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.core.files.storage import Storage
from django.db import connection, models
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404
from django.urls import path, reverse
from django.utils.html import format_html

from bitacora.models import Outcome
from bitacora.services import AuditContext, record
from core.media_names import media_file_refusal
from usuarios.permissions import puede_ver_archivos_de_pacientes

# Shown in the browser; anything else (HTML, SVG, PDF, an unknown type) is a download.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff"})
AUDIT_ACTION = "patient_file.open"


class _LinkedFieldFile(FieldFile):
    """A row's file whose url is its link in the clinic's admin: the change form's widget and the
    read-only display both link to FieldFile.url."""

    def __init__(self, instance: models.Model, field: models.FileField, name: str, link: str):
        super().__init__(instance, field, name)
        self.link = link

    @property
    def url(self) -> str:
        return self.link


def patient_file_response(storage: Storage, name: str, *, max_length: int) -> FileResponse:
    """Steps 4 and 5: the current clinic's file at name, streamed; 404 for a refused or missing name."""
    if not name or media_file_refusal(storage, connection.schema_name, name, max_length=max_length):
        raise Http404
    try:
        opened = storage.open(name, "rb")
    except FileNotFoundError:
        raise Http404 from None
    content_type = mimetypes.guess_type(name)[0]
    inline = content_type in INLINE_TYPES
    response = FileResponse(opened, as_attachment=not inline, filename=posixpath.basename(name),
                            content_type=content_type if inline else "application/octet-stream")
    response["Cache-Control"] = "private, no-store"
    response["Content-Security-Policy"] = "sandbox"
    return response


class PatientFilesAdminMixin:
    """For a ModelAdmin whose model holds patient files: each file field links to, and streams
    through, the view above (see the map)."""

    def _file_fields(self) -> dict[str, models.FileField]:
        return {field.name: field for field in self.opts.concrete_fields if isinstance(field, models.FileField)}

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_patient_file"
        view = self.admin_site.admin_view(self.patient_file_view)
        return [path("<path:object_id>/archivo/<str:field_name>/", view, name=name), *super().get_urls()]

    def patient_file_link(self, obj: models.Model, field_name: str) -> str:
        """Where the admin links this row's file."""
        name = f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_patient_file"
        return reverse(name, args=[quote(obj.pk), field_name])

    def patient_file_anchor(self, obj: models.Model, field_name: str) -> str:
        """A list column's link to the row's file (its base name), or a dash."""
        name = getattr(obj, field_name).name
        if not name:
            return "—"
        return format_html('<a href="{}">{}</a>', self.patient_file_link(obj, field_name), posixpath.basename(name))

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is not None and obj.pk is not None:
            for field_name, field in self._file_fields().items():
                name = getattr(obj, field_name).name
                if name:
                    setattr(obj, field_name, _LinkedFieldFile(obj, field, name, self.patient_file_link(obj, field_name)))
        return obj

    def has_view_permission(self, request, obj=None) -> bool:
        # The clinic's roles open these rows, as the API's do; Django's permissions still may.
        return puede_ver_archivos_de_pacientes(request.user) or super().has_view_permission(request, obj)

    def has_module_permission(self, request) -> bool:
        return puede_ver_archivos_de_pacientes(request.user) or super().has_module_permission(request)

    def patient_file_view(self, request, object_id: str, field_name: str):
        """Steps 2 to 5 of the map (step 1 is the admin's own)."""
        field = self._file_fields().get(field_name)
        obj = self.get_object(request, unquote(object_id)) if field is not None else None
        if obj is None:
            raise Http404
        audited = {"context": AuditContext.from_request(request), "action": AUDIT_ACTION,
                   "target_type": self.opts.label_lower, "target_id": obj.pk}
        if not (self.has_view_or_change_permission(request, obj) and puede_ver_archivos_de_pacientes(request.user)):
            record(**audited, outcome=Outcome.ERROR, details={"field": field_name, "code": "permission_denied"})
            raise PermissionDenied
        stored = getattr(obj, field_name)
        try:
            response = patient_file_response(stored.storage, stored.name, max_length=field.max_length or 100)
        except Http404:
            record(**audited, outcome=Outcome.ERROR, details={"field": field_name, "code": "not_found"})
            raise
        record(**audited, details={"field": field_name})
        return response
