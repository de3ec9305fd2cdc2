from django.core.management.base import BaseCommand

from recommender.models import TrainingJob
from recommender.services.training import needs_initial_training


class Command(BaseCommand):
    help = (
        "Queues the background training of a CGD model on the catalogue when no trained model is registered "
        "(the platform's first start). Until it finishes the platform serves the untrained backbone."
    )

    def handle(self, **options):
        from recommender.tasks import train_catalogue_model

        if not needs_initial_training():
            self.stdout.write("no training needed (a trained model exists, one is in progress, or no catalogue)")
            return
        job = TrainingJob.objects.create()
        train_catalogue_model.delay(job.id)
        self.stdout.write(f"queued training job {job.id}; progress in /healthz and the admin")
