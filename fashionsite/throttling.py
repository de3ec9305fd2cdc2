"""Throttling shared by the API and the pages: DRF's throttle classes, whose counters live in the cache (Redis,
shared by every web process), applied to plain Django views too, so that a page and its API twin count as one.

A client is identified by its socket address, or, when FASHIONSITE_TRUSTED_PROXIES (DRF's NUM_PROXIES) says how
many proxies of ours stand in front, by the address the outermost of them saw. X-Forwarded-For is never trusted
otherwise: anyone can send one.
"""
import math
from functools import wraps

from django.shortcuts import render
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from fashionsite.errors import json_error


def client_address(request) -> str:
    """The client's address as the throttles see it (a Django or a DRF request)."""
    return BaseThrottle().get_ident(request)


class LiveRateMixin:
    """Reads the rate from the current settings on each request (so that settings overrides apply in tests)."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AddressRateThrottle(LiveRateMixin, SimpleRateThrottle):
    """Per client address, signed in or not (registration, sign-in attempts). Subclasses name the scope."""

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def too_many_requests(request, wait: float | None, detail: str = "too many requests; slow down"):
    """The 429 answer of a page (its template) or of a page's JSON (the one error shape), with Retry-After."""
    seconds = max(1, math.ceil(wait)) if wait else None
    if request.path.startswith("/api/") or request.GET.get("format") == "json" or (
        "application/json" in request.headers.get("Accept", "")
    ):
        response = json_error(429, f"{detail} (try again in {seconds} s)" if seconds else detail)
    else:
        response = render(request, "429.html", {"detail": detail, "retry_after": seconds}, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response


def throttled(*throttle_classes, scope: str | None = None, methods=("POST",)):
    """Applies DRF throttle classes to a Django view (for the given methods): over the rate, a 429."""

    class View:  # what DRF's throttles read from a view
        throttle_scope = scope

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method in methods:
                waits = []
                for throttle in (cls() for cls in throttle_classes):
                    if not throttle.allow_request(request, View):
                        waits.append(throttle.wait())
                if waits:
                    known = [wait for wait in waits if wait is not None]
                    return too_many_requests(request, max(known) if known else None)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
