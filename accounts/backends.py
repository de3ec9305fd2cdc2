from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from accounts.throttling import FailedLogins
from fashionsite.throttling import client_address


class ThrottledModelBackend(ModelBackend):
    """Django's backend, refusing any password for an account or address over its failed sign-ins (every
    sign-in form, the admin's included; the login page and the token API answer 429 before getting here)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is not None and FailedLogins.wait(username or "", client_address(request)):
            raise PermissionDenied("too many failed sign-ins")
        return super().authenticate(request, username=username, password=password, **kwargs)
