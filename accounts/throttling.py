"""Limits on registration and sign-in: requests per client address (DRF throttles, pages and API together),
and failed sign-ins per account and per address (FailedLogins), all counted in the shared cache (Redis)."""
import hashlib
import time

from django.conf import settings
from django.core.cache import cache

from fashionsite.throttling import AddressRateThrottle


class RegisterThrottle(AddressRateThrottle):
    """New accounts per client address ("register" rate)."""

    scope = "register"


class LoginThrottle(AddressRateThrottle):
    """Sign-in attempts per client address, whatever their outcome ("login" rate)."""

    scope = "login"


class FailedLogins:
    """Failed sign-ins in fixed windows (FAILED_LOGINS_WINDOW seconds): once an account, or an address, has
    FAILED_LOGINS_PER_ACCOUNT / _PER_ADDRESS of them, sign-ins for it are refused (429) until its window ends,
    the right password included, so that guessing cannot go on in the background."""

    @staticmethod
    def _counters(username: str, address: str):
        account = hashlib.sha256((username or "").strip().lower().encode()).hexdigest()[:32]
        yield f"failed-login:account:{account}", settings.FAILED_LOGINS_PER_ACCOUNT
        yield f"failed-login:address:{address}", settings.FAILED_LOGINS_PER_ADDRESS

    @classmethod
    def record(cls, username: str, address: str) -> None:
        window = settings.FAILED_LOGINS_WINDOW
        for key, _ in cls._counters(username, address):
            cache.add(f"{key}:start", time.time(), window)
            if not cache.add(key, 1, window):
                try:
                    cache.incr(key)
                except ValueError:  # the window ended between the two calls
                    cache.add(key, 1, window)

    @classmethod
    def wait(cls, username: str, address: str) -> float | None:
        """Seconds until sign-ins for this account and address are accepted again; None if they are now."""
        window = settings.FAILED_LOGINS_WINDOW
        waits = []
        for key, limit in cls._counters(username, address):
            if (cache.get(key) or 0) >= limit:
                started = cache.get(f"{key}:start") or time.time()
                waits.append(max(1.0, window - (time.time() - started)))
        return max(waits) if waits else None
