from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ml.embedding import load_embedder
from ml.evaluation.pipeline import cosine_ranker_factory, format_table, run_evaluation


class Command(BaseCommand):
    help = (
        "Scores a model on a data folder as ../shared/docs/EVALUATION.md defines (protocol A both directions, "
        "protocol B; mAP@100, hit@6, recall@6) and writes the rankings file. Uses no database."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, required=True, help="folder in the original layout")
        parser.add_argument("--test-looks", type=Path, required=True, help="file of test look ids, one per line")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--untrained", action="store_true", help="the ImageNet backbone, no training on looks")
        which.add_argument("--model", type=Path, help="a trained model directory")
        parser.add_argument("--backbone", default="lite0", choices=["lite0", "lite2"], help="with --untrained")
        parser.add_argument("--rankings", type=Path, required=True, help="where to write the rankings (JSONL)")
        parser.add_argument("--json", type=Path, help="where to write the metrics (JSON)")

    def handle(self, data, test_looks, untrained, model, backbone, rankings, json, **options):
        if model is not None:
            raise CommandError("--model needs a trained model; training is not part of this version yet")
        method = "untrained"
        spec = f"untrained-{backbone}"
        try:
            embedder = load_embedder(spec, settings.MODEL_CACHE_DIR)
            result = run_evaluation(
                data, test_looks, cosine_ranker_factory(embedder, progress=options["verbosity"] > 0),
                rankings_out=rankings, json_out=json, method=method,
            )
        except (FileNotFoundError, ValueError) as error:
            raise CommandError(str(error))
        self.stdout.write(format_table({method: result.metrics}))
        for direction, values in result.metrics.items():
            self.stdout.write(f"{direction}: {values}")
