from django.core.management.base import BaseCommand

from recommender.services.embedding import requeue_pending


class Command(BaseCommand):
    help = "Re-queues every pending or failed image for embedding (e.g. after the worker or Redis was down)."

    def handle(self, **options):
        self.stdout.write(f"queued {requeue_pending()} descriptors")
