"""Answering with a stored media file (the views decide who may see it: catalogue photos anyone, a wardrobe
photo its owner only).

Files are read through Django's storage API. With MEDIA_ACCEL_REDIRECT_PREFIX set (a front proxy such as nginx
in front, docs/DEPLOYMENT.md), the answer is an empty response with X-Accel-Redirect naming the file, and the
proxy sends it from its internal location; otherwise the file itself, streamed (FileResponse), with
Last-Modified and If-Modified-Since handled.
"""
import mimetypes
import posixpath
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, HttpResponseNotModified
from django.utils.http import http_date
from django.views.static import was_modified_since


def clean_media_name(folder: str, name: str) -> str:
    """`folder`/`name` as a storage name; Http404 for anything that would leave the folder."""
    joined = posixpath.normpath(posixpath.join(folder, name))
    if not joined.startswith(folder.rstrip("/") + "/") or "\\" in name or "\0" in name:
        raise Http404("no such file")
    return joined


def stored_file_response(request, name: str, cache_control: str):
    storage = default_storage
    if not storage.exists(name):
        raise Http404("no such file")
    content_type, _ = mimetypes.guess_type(name)
    content_type = content_type or "application/octet-stream"
    prefix = settings.MEDIA_ACCEL_REDIRECT_PREFIX
    if prefix:
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + quote(name)
    else:
        try:
            modified = storage.get_modified_time(name).timestamp()
        except NotImplementedError:
            modified = None
        if modified is not None and not was_modified_since(request.META.get("HTTP_IF_MODIFIED_SINCE"), modified):
            response = HttpResponseNotModified()
        else:
            response = FileResponse(storage.open(name, "rb"), content_type=content_type)
        if modified is not None:
            response["Last-Modified"] = http_date(modified)
    response["Cache-Control"] = cache_control
    return response
