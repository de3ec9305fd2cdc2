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
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=TIME_BUDGET_S + 120)
    report.write_text(result.stdout + result.stderr)
    print(result.stdout[-4000:])
    assert result.returncode == 0, f"schemathesis found problems (full report in {report}):\n{result.stdout[-12000:]}"
