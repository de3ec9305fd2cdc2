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
            return self.handle_model(data, test_looks, model, rankings, json, options)
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

    def handle_model(self, data, test_looks, model, rankings, json, options):
        """A trained model directory: its descriptors, ranked with the scoring of ml.retrieval (the card's
        post-processing; look transfer through the links of the looks of DATA that are not test looks)."""
        from ml.embedding import CGDEmbedder, ModelDirError
        from ml.evaluation.dataset import read_look_ids
        from ml.evaluation.pipeline import embed_dataset
        from ml.retrieval.ranker import ScoringRanker

        model = Path(model)
        try:
            embedder = CGDEmbedder(model)
        except ModelDirError as error:
            raise CommandError(str(error))
        post = embedder.card.postprocessing
        method = f"trained ({model.name})"
        progress = options["verbosity"] > 0

        def factory(dataset):
            test = read_look_ids(test_looks, dataset)
            excluded = set(embedder.card.excluded_test_looks)
            if not test <= excluded:
                self.stderr.write(f"warning: the model was not trained with these test looks excluded "
                                  f"({len(test - excluded)} of them may have been trained on)")
            known = set(dataset.looks) - test
            return ScoringRanker(embed_dataset(dataset, embedder, progress=progress), dataset, known, post,
                                 hub_reference=embedder.hub_reference, domain_means=embedder.domain_means)

        try:
            result = run_evaluation(data, test_looks, factory, rankings_out=rankings, json_out=json, method=method)
        except (FileNotFoundError, ValueError) as error:
            raise CommandError(str(error))
        self.stdout.write(f"post-processing: {post.to_dict()}")
        self.stdout.write(format_table({method: result.metrics}, baseline=None))
        for direction, values in result.metrics.items():
            self.stdout.write(f"{direction}: {values}")
