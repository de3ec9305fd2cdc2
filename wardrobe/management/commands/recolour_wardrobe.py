from django.core.management.base import BaseCommand

from wardrobe.services.wardrobe import recolour_wardrobe_items


class Command(BaseCommand):
    help = (
        "Recomputes the colour words of every wardrobe upload from its photo (ml.tagging.colour: the garment's "
        "pixels, background and skin left out) and recomputes the suggestions of owners whose words changed. "
        "New uploads get them on upload; run this once after the colour rule changes."
    )

    def handle(self, **options):
        outcome, problems = recolour_wardrobe_items(progress=options["verbosity"] > 0)
        for problem in problems:
            self.stderr.write(f"unreadable: {problem}")
        self.stdout.write(
            f"colour words: {outcome['changed']} changed, {outcome['unchanged']} unchanged, "
            f"{outcome['failed']} unreadable"
        )
