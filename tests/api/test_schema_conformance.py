"""schemathesis, a third-party client of the OpenAPI schema, against gunicorn serving the live schema: every
generated request's answer must be documented (status code, content type, body schema), never a server error,
with all of schemathesis's checks on. Bounded: few examples per operation, a time budget."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashionsite.paths import PROJECT_ROOT

MAX_EXAMPLES = 8
TIME_BUDGET_S = 100


@pytest.mark.slow
def test_schemathesis_finds_nothing_against_the_live_schema(gunicorn_server, transactional_db, active_version):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user(username="schemathesis", password="pass-word-123")
    token = Token.objects.create(user=user).key
    schemathesis = Path(sys.executable).with_name("schemathesis")
    report = Path(os.environ.get("FASHIONSITE_DATA_DIR", PROJECT_ROOT / "var" / "test")) / "schemathesis.txt"
    command = [
        str(schemathesis), "--config-file", str(PROJECT_ROOT / "tests" / "api" / "schemathesis.toml"), "run", f"{gunicorn_server}/api/schema/?format=json",
        "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--max-time", str(TIME_BUDGET_S),
        "--workers", "1", "--request-timeout", "60", "--seed", "1",
        "--header", f"Authorization: Token {token}",
    ]
    hooks = PROJECT_ROOT / "tests" / "api" / "schemathesis_hooks.py"  # what the schema cannot say (its docstring)
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=TIME_BUDGET_S + 120,
                            env=dict(os.environ, SCHEMATHESIS_HOOKS=str(hooks)))
    report.write_text(result.stdout + result.stderr)
    print(result.stdout[-4000:])
    assert result.returncode == 0, f"schemathesis found problems (full report in {report}):\n{result.stdout[-12000:]}"


def test_the_hooks_drop_only_multipart_bodies_that_lose_a_field_on_the_wire():
    """tests/api/schemathesis_hooks.py: an empty list in a multipart body sends no part (the request is the one
    without that field); every other body, and every body of a JSON operation, is kept."""
    from types import SimpleNamespace

    from tests.api.schemathesis_hooks import sends_every_field

    multipart = SimpleNamespace(body=[SimpleNamespace(media_type="multipart/form-data")])
    json_body = SimpleNamespace(body=[SimpleNamespace(media_type="application/json")])
    assert not sends_every_field(multipart, {"image": b"png", "k": []})
    assert sends_every_field(multipart, {"image": b"png", "k": [3, 4]})  # two parts named k: refused by the server
    assert sends_every_field(multipart, {"image": b"png", "k": "x"})
    assert sends_every_field(json_body, {"category": []})  # JSON sends the empty list itself
    assert sends_every_field(multipart, None) and sends_every_field(None, {"k": []})


def test_the_hooks_drop_only_query_strings_longer_than_the_servers_request_line():
    from tests.api.schemathesis_hooks import LONGEST_QUERY, fits_the_request_line

    assert fits_the_request_line(None) and fits_the_request_line({"page": 2, "page_size": [3, "x"]})
    assert fits_the_request_line({"style": {"a": 1}})
    assert not fits_the_request_line({"page": ["9" * 100] * (LONGEST_QUERY // 100)})
