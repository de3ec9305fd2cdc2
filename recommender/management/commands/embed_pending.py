from django.core.management.base import BaseCommand

from recommender.models import Descriptor
from recommender.services.reconcile import reconcile


class Command(BaseCommand):
    help = (
        "Sends the pending images that are not on their way to the workers (never sent, e.g. while Redis was "
        "down, or lost with a queue) and retries failed ones that have tries left: one pass of the reconciler. "
        "With --retry-failed, every failed image gets its tries anew (after fixing what made it fail)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--retry-failed", action="store_true", help="give every failed image new tries")

    def handle(self, retry_failed=False, **options):
        if retry_failed:
            count = Descriptor.objects.filter(status=Descriptor.Status.FAILED).update(
                status=Descriptor.Status.PENDING, attempts=0, queued_at=None
            )
            self.stdout.write(f"{count} failed images are pending again")
        report = reconcile()
        if report.get("broker") == "down":
            self.stderr.write("the broker (Redis) does not answer: the pending images wait in the database")
        self.stdout.write(f"reconciled: {report}")
