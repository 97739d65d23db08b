"""A clinic reached by path on the shared host: `/clinicas/<slug>/…` (TENANT_SUBFOLDER_PREFIX).

django-tenants' subfolder routing puts every URL of the clinic URLConf under that
prefix, in a URLConf module of the clinic's own (django_tenants.urlresolvers.
get_subfolder_urlconf). These helpers name the prefix, read it off a path, keep those
URLConfs, and build a clinic's URLs from anywhere (the platform admin links to each
clinic's own admin).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from types import ModuleType

from django.conf import settings
from django.urls import clear_url_caches, get_script_prefix, reverse
from django_tenants.urlresolvers import get_subfolder_urlconf
from django_tenants.utils import get_subfolder_prefix

from core.models import Tenant

# Django keeps a resolver per URLConf object, forever, about 0.3 MB each here once used.
# django-tenants' own middleware builds a fresh URLConf per request and clears every URL
# cache each time (some 10 ms, and the other routes' resolvers rebuilt after it); here the
# URLConfs of the clinics used lately are kept, and the caches cleared only when one is
# dropped, so memory stays bounded however many clinics a process serves.
URLCONFS_KEPT = 16
_urlconfs: OrderedDict[str, ModuleType] = OrderedDict()
_urlconfs_lock = threading.Lock()


def clinic_path_slug(path: str) -> str | None:
    """`/clinicas/clinica-demo/admin/` → `clinica-demo`; None for any other path."""
    prefix = f"/{get_subfolder_prefix()}/"
    if not path.startswith(prefix):
        return None
    return path[len(prefix):].split("/", 1)[0] or None


def clinic_path_prefix(slug: str, *, script_name: str = "") -> str:
    """`/clinicas/clinica-demo/`: where that clinic's pages, and its cookies, live."""
    return f"{script_name.rstrip('/')}/{get_subfolder_prefix()}/{slug}/"


def clinic_path_urlconf(slug: str) -> ModuleType:
    """The clinic URLConf under `/clinicas/<slug>/`."""
    with _urlconfs_lock:
        urlconf = _urlconfs.get(slug)
        if urlconf is not None:
            _urlconfs.move_to_end(slug)
            return urlconf
        tenant = Tenant(slug=slug)
        tenant.domain_subfolder = slug
        urlconf = _urlconfs[slug] = get_subfolder_urlconf(tenant)
        if len(_urlconfs) > URLCONFS_KEPT:
            _urlconfs.popitem(last=False)
            clear_url_caches()  # and with them Django's resolver of the URLConf just dropped
        return urlconf


def clinic_path_reverse(slug: str, viewname: str, *args) -> str:
    """A clinic's URL by path, e.g. `/clinicas/<slug>/admin/backups/backuprecord/`.

    The clinic URLConf under the prefix, reversed without building that clinic's resolver:
    the platform page links to hundreds of clinics.
    """
    script_prefix = get_script_prefix()
    path = reverse(viewname, urlconf=settings.ROOT_URLCONF, args=args)
    return clinic_path_prefix(slug, script_name=script_prefix) + path[len(script_prefix):]
