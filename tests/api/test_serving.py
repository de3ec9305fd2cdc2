"""The web as `make run` serves it (gunicorn, DEBUG off): static files from WhiteNoise, the site's own error
pages, JSON errors in one shape under /api/, a secret key kept per data directory."""
import os
import re
import subprocess
import sys

import pytest
import requests
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db


def test_gunicorn_serves_pages_and_hashed_static_files_through_whitenoise(gunicorn_server):
    page = requests.get(gunicorn_server + "/", timeout=30)
    assert page.status_code == 200 and page.headers["Server"].startswith("gunicorn")
    stylesheet = re.search(r'href="(/static/css/site\.[0-9a-f]{12}\.css)"', page.text)
    assert stylesheet, "the page links the hashed copy made by collectstatic"
    css = requests.get(gunicorn_server + stylesheet.group(1), headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert "immutable" in css.headers["Cache-Control"] and "max-age=315360000" in css.headers["Cache-Control"]
    assert css.headers.get("Content-Encoding") == "gzip"  # the compressed copy


def test_gunicorn_answers_the_sites_own_404_page_and_json_404_under_api(gunicorn_server):
    page = requests.get(gunicorn_server + "/no/such/page/", timeout=30)
    assert page.status_code == 404 and page.headers["Content-Type"].startswith("text/html")
    assert "Page not found" in page.text and "URLconf" not in page.text  # not Django's debug page
    api = requests.get(gunicorn_server + "/api/no/such/endpoint/", timeout=30)
    assert api.status_code == 404 and api.headers["Content-Type"] == "application/json"
    assert api.json() == {"detail": "no API endpoint or object at /api/no/such/endpoint/", "code": "not_found",
                          "status": 404}


def test_debug_is_off_unless_asked_for():
    assert settings.DEBUG is False  # pytest-django forces it off; the default in settings is off too
    from fashionsite import settings as module

    assert "FASHIONSITE_DEBUG\", \"0\"" in open(module.__file__).read()


def test_the_secret_key_is_generated_once_per_data_directory(tmp_path):
    from fashionsite.secrets import secret_key_in

    first = secret_key_in(tmp_path)
    assert len(first) >= 50 and secret_key_in(tmp_path) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # readable by its owner only
    other = tmp_path / "other"
    other.mkdir()
    assert secret_key_in(other) != first


ERROR_KEYS = {"detail", "code", "status"}


@pytest.mark.parametrize(
    "method,url,status,code",
    [
        ("get", "/api/nothing-here/", 404, "not_found"),
        ("get", "/api/wardrobe/items/", 401, "not_authenticated"),
        ("get", "/api/wardrobe/items/999999/", 401, "not_authenticated"),
        ("put", "/api/search/items/", 405, "method_not_allowed"),
        ("post", "/api/auth/register/", 400, "invalid"),
    ],
)
def test_api_errors_are_json_in_one_shape(method, url, status, code):
    response = getattr(Client(), method)(url)
    assert response.status_code == status and response["Content-Type"] == "application/json"
    body = response.json()
    assert ERROR_KEYS <= set(body) <= ERROR_KEYS | {"errors"}
    assert body["status"] == status and body["code"] == code and isinstance(body["detail"], str) and body["detail"]


def test_invalid_input_names_each_field_in_errors():
    body = Client().post("/api/auth/register/", {"username": "", "password": ""}).json()
    assert body["code"] == "invalid" and set(body["errors"]) == {"username", "password"}
    assert all(isinstance(m, str) for messages in body["errors"].values() for m in messages)


def test_an_api_server_error_is_json_too():
    import json

    from django.test import RequestFactory

    from fashionsite.errors import server_error

    response = server_error(RequestFactory().get("/api/search/items/"))
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert set(json.loads(response.content)) == ERROR_KEYS


def test_a_page_server_error_is_the_sites_own_page():
    from django.test import RequestFactory

    from fashionsite.errors import server_error

    response = server_error(RequestFactory().get("/looks/"))
    assert response.status_code == 500 and b"Something went wrong" in response.content


def test_the_pages_own_404_with_debug_off():
    response = Client().get("/looks/999999/")
    assert response.status_code == 404 and b"Page not found" in response.content
    assert b"data-testid=\"error-page\"" in response.content


def test_https_settings_make_check_deploy_clean():
    from fashionsite.paths import PROJECT_ROOT

    env = dict(os.environ, FASHIONSITE_HTTPS="1", FASHIONSITE_STATIC_MANIFEST="1", FASHIONSITE_DEBUG="0")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def _gunicorn_config(monkeypatch, **environment):
    from gunicorn.config import Config

    from fashionsite.launcher import web_command

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    command = web_command()
    assert "--preload" not in command and command[command.index("--config") + 1].endswith("gunicorn.conf.py")
    config = Config()
    namespace = {}
    exec(open(command[command.index("--config") + 1]).read(), namespace)
    for name in ("wsgi_app", "workers", "threads", "worker_class", "timeout", "max_requests", "max_requests_jitter",
                 "preload_app", "post_worker_init", "keepalive", "worker_connections"):
        config.set(name, namespace[name])
    return config, namespace


def test_gunicorn_loads_the_app_and_the_model_in_each_worker_after_the_fork(monkeypatch):
    """TensorFlow is not fork-safe: no --preload, and the model is sized and warmed by a post_worker_init hook.
    By default one worker per core (each runs the model on its share of the cores), of a few threads; a worker
    takes a connection only when a thread is free and closes it after the answer, so waiting requests queue in
    the one listening socket. A lone worker is never recycled (nobody would answer meanwhile), several are, at
    staggered times."""
    from ml.cores import available_cores

    for name in ("FASHIONSITE_WEB_WORKERS", "FASHIONSITE_WEB_THREADS", "FASHIONSITE_WEB_MAX_REQUESTS",
                 "FASHIONSITE_WEB_KEEPALIVE", "FASHIONSITE_WEB_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    config, namespace = _gunicorn_config(monkeypatch)
    assert config.preload_app is False and config.worker_class_str == "gthread"
    assert config.workers == available_cores() and config.threads == 2
    assert config.keepalive == 0 and config.worker_connections == config.threads
    assert {"set_tf_threads", "intra_op_threads_for", "warm_up_active_model"} <= set(
        namespace["post_worker_init"].__code__.co_names)
    config, _ = _gunicorn_config(monkeypatch, FASHIONSITE_WEB_WORKERS="1", FASHIONSITE_WEB_THREADS="4")
    assert config.workers == 1 and config.max_requests == 0 and config.worker_connections == 4
    config, _ = _gunicorn_config(monkeypatch, FASHIONSITE_WEB_WORKERS="3")
    assert config.workers == 3 and config.max_requests > 0 and config.max_requests_jitter > 0


def test_gunicorn_workers_run_numpy_on_one_blas_thread(monkeypatch):
    """OpenBLAS's own thread pool spun between a search's small products and took a quarter of a core from the
    request threads under load: the config gives every worker (forked from the master that reads it) one BLAS
    thread, unless the environment says otherwise."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "")  # restored (or removed) after the test: the config sets it
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    _gunicorn_config(monkeypatch)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    probe = "import os, numpy; print(len(os.listdir('/proc/self/task')))"  # numpy's import starts its pool
    threads = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert threads.stdout.strip() == "1"  # the workers' environment: numpy starts no BLAS thread
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    _gunicorn_config(monkeypatch)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "2"


def test_the_procfile_declares_the_services():
    from tests.conftest import procfile_services

    services = procfile_services()
    assert {"web", "worker", "interactive", "training", "beat", "reconciler"} <= set(services)
    assert "--queues interactive" in services["interactive"]
    assert "gunicorn --config fashionsite/gunicorn.conf.py" in services["web"] and "--preload" not in services["web"]
