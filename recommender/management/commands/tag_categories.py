from django.core.management.base import BaseCommand

from recommender.services import tagging


class Command(BaseCommand):
    help = (
        "Tags every catalogue item and wardrobe upload that has no category (the trained category head on its "
        "descriptor, see train_tagger), in this process; never overwrites a category set by hand. With --styles, "
        "also suggests a style for looks and uploads without one (needs ready descriptors)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--styles", action="store_true", help="also suggest styles where they are empty")

    def handle(self, styles=False, **options):
        ids = tagging.untagged_ids()
        outcome = tagging.tag_categories(ids["item_ids"], ids["wardrobe_item_ids"], progress=options["verbosity"] > 0)
        self.stdout.write(f"tagged {outcome['tagged']} images with a category ({outcome['from_files']} from their "
                          f"files, the rest from their descriptors); {outcome['failed']} unreadable")
        if styles:
            suggested = tagging.suggest_styles(ids["look_ids"], ids["wardrobe_item_ids"])
            self.stdout.write(
                f"suggested a style for {suggested['looks']} looks and {suggested['wardrobe_items']} uploads"
            )
