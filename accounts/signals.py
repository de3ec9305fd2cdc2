"""Every failed sign-in (the login page, the token API, the admin's login) counts against the account and the
client's address."""
from accounts.throttling import FailedLogins
from fashionsite.throttling import client_address


def count_failed_login(sender, credentials, request=None, **kwargs):
    if request is None:
        return
    FailedLogins.record(credentials.get("username", ""), client_address(request))
