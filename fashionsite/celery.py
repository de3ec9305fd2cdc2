"""The Celery app: Redis is broker and result backend; tasks live in the apps' tasks.py modules."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fashionsite.settings")

app = Celery("fashionsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
