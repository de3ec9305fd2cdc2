"""schemathesis hooks for tests/api/test_schema_conformance.py (loaded through SCHEMATHESIS_HOOKS): what the
schema cannot tell schemathesis about how a request travels."""
from urllib.parse import urlencode

import schemathesis
from schemathesis.core.media_types import is_multipart

# gunicorn refuses a request line longer than its limit_request_line (4,094 bytes, fashionsite/gunicorn.conf.py keeps
# the default) with its own 414 page, before the application sees the request; half of it leaves room for the path
# and for the way schemathesis spells nested values.
LONGEST_QUERY = 2000


def sends_every_field(operation, body) -> bool:
    """False for a multipart body that holds an empty list, True for every other body.

    Multipart sends a list as one part per element, so an empty list sends no part at all: the request on the wire
    is the same request without that field. For an optional field (a search's `k` or `category`) that request is
    valid, yet schemathesis counts the body as negative data ("k was integer, became array") and expects it
    refused. Such a body tests nothing the body without the field does not (seen once in CI: POST
    /api/search/items/ with `k` an empty list, answered 200 with the default k)."""
    if not isinstance(body, dict) or operation is None:
        return True
    media_types = [candidate.media_type for candidate in operation.body]
    if not media_types or not all(is_multipart(media_type) for media_type in media_types):
        return True
    return not any(isinstance(value, list) and not value for value in body.values())


@schemathesis.hook
def filter_body(ctx, body):
    return sends_every_field(ctx.operation, body)


def fits_the_request_line(query) -> bool:
    """False for a query string longer than LONGEST_QUERY once encoded: the HTTP server answers it (414, HTML)
    before the application, so it tests gunicorn's limit, not the API (seen once: GET /api/suggestions/ with
    `page` and `page_size` lists of a few kilobytes)."""
    if not query:
        return True
    return len(urlencode({name: str(value) if isinstance(value, dict) else value for name, value in query.items()},
                         doseq=True)) <= LONGEST_QUERY


@schemathesis.hook
def filter_query(ctx, query):
    return fits_the_request_line(query)
