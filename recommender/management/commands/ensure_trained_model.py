from django.core.management.base import BaseCommand
from django.utils import timezone

from fashionsite.queueing import enqueue
from recommender.models import TrainingJob
from recommender.services.training import needs_initial_training


class Command(BaseCommand):
    help = (
        "Queues the background training of a CGD model on the catalogue when no trained model is registered "
        "(the platform's first start). Until it finishes the platform serves the untrained backbone."
    )

    def handle(self, **options):
        if not needs_initial_training():
            self.stdout.write("no training needed (a trained model exists, one is in progress, or no catalogue)")
            return
        job = TrainingJob.objects.create()
        # if Redis is down now, the job stays queued with no queued_at and the reconciler sends it later
        enqueue("recommender.tasks.train_catalogue_model", (job.id,),
                on_sent=lambda: TrainingJob.objects.filter(pk=job.pk).update(queued_at=timezone.now()))
        self.stdout.write(f"queued training job {job.id}; progress in /healthz and the admin")
