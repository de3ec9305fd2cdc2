"""The cache (throttle counters, failed sign-ins): Django's Redis backend, made to degrade instead of fail.

If Redis does not answer, a request must still be served (search and pages keep working while the broker is
down): every cache call then behaves as a miss (nothing stored, nothing found), and for a few seconds the cache
does not even try, so that a dead Redis costs one short timeout every few seconds rather than one per call.
Throttles are therefore not enforced while Redis is down; that is logged.
"""
import logging
import time
from urllib.parse import urlsplit, urlunsplit

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5.0


def cache_url_beside(redis_url: str) -> str:
    """The Redis URL of the database after the broker's (redis://host:port/0 -> .../1; 15 -> 0, Redis has 16): the
    cache can be cleared (tests do) without touching the task queue."""
    parts = urlsplit(redis_url)
    number = int(parts.path.strip("/") or "0")
    return urlunsplit(parts._replace(path=f"/{(number + 1) % 16}"))


def _connection_errors():
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class ResilientRedisCache(RedisCache):
    _down_until = 0.0  # shared by the process's cache objects (one per thread)

    def _guarded(self, default, method, *args, **kwargs):
        if time.monotonic() < ResilientRedisCache._down_until:
            return default
        try:
            return method(*args, **kwargs)
        except _connection_errors() as error:
            ResilientRedisCache._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            logger.warning("the cache (Redis) does not answer (%s); throttles are off until it does", error)
            return default

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guarded(False, super().add, key, value, timeout, version)

    def get(self, key, default=None, version=None):
        return self._guarded(default, super().get, key, default, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guarded(None, super().set, key, value, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guarded(False, super().touch, key, timeout, version)

    def delete(self, key, version=None):
        return self._guarded(False, super().delete, key, version)

    def get_many(self, keys, version=None):
        return self._guarded({}, super().get_many, keys, version)

    def has_key(self, key, version=None):
        return self._guarded(False, super().has_key, key, version)

    def incr(self, key, delta=1, version=None):
        # Django raises ValueError for a missing key; a cache that is down counts nothing
        return self._guarded(0, super().incr, key, delta, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._guarded([], super().set_many, data, timeout, version)

    def delete_many(self, keys, version=None):
        return self._guarded(None, super().delete_many, keys, version)

    def clear(self):
        return self._guarded(False, super().clear)
