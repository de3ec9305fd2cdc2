"""Errors in one shape. Under /api/ (DRF views, and Django's 404/500/403/400 for /api/ paths outside DRF) an
error is JSON:

    {"detail": "a sentence naming the problem", "code": "not_found", "status": 404,
     "errors": {"field": ["what is wrong with it"], ...}}          # "errors" only for invalid input

The pages' own JSON answers (`?format=json` search, the wardrobe's status) use the same shape. Everywhere else
the error pages are the site's own templates (404.html, 500.html, 403.html, 400.html, 429.html).
"""
from django.http import HttpResponseBadRequest, HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler

API_PREFIX = "/api/"
DEFAULT_CODES = {
    400: "bad_request", 401: "not_authenticated", 403: "permission_denied", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 415: "unsupported_media_type",
    429: "throttled", 500: "server_error", 503: "unavailable",
}


def error_body(status: int, detail: str, code: str | None = None, errors: dict | None = None) -> dict:
    body = {"detail": str(detail), "code": code or DEFAULT_CODES.get(status, "error"), "status": status}
    if errors:
        body["errors"] = errors
    return body


def json_error(status: int, detail: str, code: str | None = None, errors: dict | None = None, **kwargs):
    return JsonResponse(error_body(status, detail, code, errors), status=status, **kwargs)


def _field_errors(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail -> {"field" or "field.0.sub": [messages]}."""
    if isinstance(detail, dict):
        flat = {}
        for key, value in detail.items():
            flat.update(_field_errors(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(detail, list) and detail and all(not isinstance(v, (dict, list)) for v in detail):
        return {prefix or "non_field_errors": [str(v) for v in detail]}
    if isinstance(detail, list):
        flat = {}
        for index, value in enumerate(detail):
            flat.update(_field_errors(value, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    return {prefix or "non_field_errors": [str(detail)]}


def _summary(errors: dict[str, list[str]]) -> str:
    parts = []
    for field, messages in errors.items():
        text = " ".join(messages)
        parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
    return "; ".join(parts) or "invalid input"


def api_exception_handler(exc, context):
    """DRF's handler, reshaped. Unhandled exceptions still go to Django (handler500 answers JSON under /api/)."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    status = response.status_code
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(response.data)
        response.data = error_body(status, _summary(errors), "invalid", errors)
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        code = getattr(detail, "code", None)
        response.data = error_body(status, detail or DEFAULT_CODES.get(status, "error"), code)
    return response


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIX)


# Django's handlers (fashionsite.urls names them). The messages say what happened without the request's details.


def page_not_found(request, exception=None):
    if _is_api(request):
        return json_error(404, f"no API endpoint or object at {request.path}")
    return render(request, "404.html", status=404)


def permission_denied(request, exception=None):
    if _is_api(request):
        return json_error(403, "you do not have permission to do this")
    return render(request, "403.html", status=403)


def bad_request(request, exception=None):
    if _is_api(request):
        return json_error(400, "the request could not be understood")
    # no request context: a bad request may have a broken session or host
    return HttpResponseBadRequest(loader.get_template("400.html").render())


def server_error(request):
    if _is_api(request):
        return json_error(500, "the server failed to answer this request; it has been logged")
    # rendered without the request (no database lookups for the user): the fault may be the database itself
    return HttpResponseServerError(loader.get_template("500.html").render())
