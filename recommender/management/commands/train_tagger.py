from django.core.management.base import BaseCommand, CommandError

from recommender.models import ModelVersion
from recommender.services import tagging
from recommender.services.versions import active_version


class Command(BaseCommand):
    help = (
        "Trains the category tagger's head for a model version (the active one by default) on every label: the "
        "hand labels and the categories users and admins confirmed or corrected, with their descriptors under "
        "that version. Prints its 5-fold cross-validated accuracy and stores it beside the model; the workers "
        "use it from their next tag. With --retag, re-tags the automatic categories with it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model-version", help="model version name (default: the active one)")
        parser.add_argument("--no-cv", action="store_true", help="skip the cross-validation (faster)")
        parser.add_argument("--retag", action="store_true", help="re-tag the automatic categories afterwards")
        parser.add_argument("--hand-labels", metavar="CSV",
                            help="first mark the catalogue items this label file names (file,category) as hand "
                                 "labels; needs --images")
        parser.add_argument("--images", metavar="DIR", help="the folder of the label file's images")

    def handle(self, model_version=None, no_cv=False, retag=False, hand_labels=None, images=None, **options):
        if hand_labels:
            if not images:
                raise CommandError("--hand-labels needs --images (the folder its file names are in)")
            try:
                applied = tagging.apply_hand_labels(hand_labels, images)
            except (OSError, KeyError, ValueError) as error:
                raise CommandError(f"cannot read the hand labels: {error}")
            self.stdout.write(f"{applied['applied']} catalogue items carry one of the {applied['labels']} hand labels")
        if model_version:
            try:
                target = ModelVersion.objects.get(name=model_version)
            except ModelVersion.DoesNotExist:
                names = ", ".join(ModelVersion.objects.values_list("name", flat=True))
                raise CommandError(f"no model version {model_version!r}; known: {names}")
        else:
            target = active_version()
        try:
            head, meta = tagging.train_category_head(target, cross_validation=not no_cv, log=self.stdout.write)
        except tagging.NotEnoughLabels as reason:
            raise CommandError(str(reason))
        sources = ", ".join(f"{n} {s}" for s, n in sorted(meta["sources"].items()))
        self.stdout.write(f"trained the category head of {target.name} on {meta['labels']} labels ({sources}) in "
                          f"{meta['seconds']} s -> {tagging.head_path(target)}")
        if retag:
            if target.is_active:
                self.stdout.write(f"re-tagged {tagging.retag_automatic()} automatic categories")
            else:
                self.stdout.write("not re-tagging: that version is not the active one")
