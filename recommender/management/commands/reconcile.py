import logging
import signal
import sys
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from recommender.services.reconcile import reconcile

logger = logging.getLogger("recommender.reconcile")


def did_something(report: dict) -> bool:
    counts = [report.get(key) or 0 for key in ("sent", "resent_stale", "retried_failed", "training_sent", "indexes")]
    return any(sum(c.values()) if isinstance(c, dict) else c for c in counts)


class Command(BaseCommand):
    help = (
        "Brings the queue in line with the database (sends pending work that was never sent or was lost, retries "
        "failed images a bounded number of times) and advances the re-embedding and training jobs. Once, or with "
        "--every N forever (a service of `make run`: it needs neither a worker nor the beat, so work that arrived "
        "while Redis was down is queued within N seconds of Redis answering again)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0, help="seconds between passes (0: one pass)")

    def handle(self, every=0, **options):
        if not every:
            self.stdout.write(str(reconcile()))
            return
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a pass interrupted mid-way is rolled back
        broker_was = None
        while True:
            try:
                close_old_connections()
                report = reconcile()
                if "skipped" in report:  # another reconciler (the beat's task, update_db) is on it
                    time.sleep(every)
                    continue
                broker = report.get("broker")
                if broker != broker_was:
                    logger.warning("reconciler: broker %s", broker)
                    broker_was = broker
                if did_something(report):
                    logger.info("reconciler: %s", report)
            except Exception:  # noqa: BLE001 - e.g. the database restarting: try again next time
                logger.exception("reconciler pass failed; trying again in %.0f s", every)
            time.sleep(every)
