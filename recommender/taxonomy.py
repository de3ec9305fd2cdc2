"""The platform's two taxonomies: item categories and look styles (the styles the Musinsa shop used).

The data migration `recommender/migrations/*_taxonomy.py` creates one Category / Style row per name; the
automatic category tagger (`ml.tagging.category`) and the style suggester (`ml.tagging.style`) only ever
answer with these names.
"""
from ml.tagging.category import SUGGESTION_THRESHOLD

# An automatic category below this confidence is shown as a suggestion the user confirms or changes (the
# tagger's own threshold, chosen on its held-out measurement: docs/RESULTS.md, issue 12).
CATEGORY_SUGGESTION_THRESHOLD = SUGGESTION_THRESHOLD

CATEGORIES = ("top", "outerwear", "bottom", "dress", "shoes", "bag", "hat", "accessory")

STYLES = (
    "street/hip-hop",
    "simple/casual",
    "formal/classic",
    "unique/kitsch",
    "sexy/feminine",
    "work/military",
    "girlish",
    "sporty",
)


def ensure_taxonomy(category_model=None, style_model=None) -> None:
    """Creates the missing Category and Style rows (idempotent). Pass historical models from a migration."""
    if category_model is None or style_model is None:
        from recommender.models import Category, Style

        category_model, style_model = category_model or Category, style_model or Style
    for name in CATEGORIES:
        category_model.objects.get_or_create(name=name)
    for name in STYLES:
        style_model.objects.get_or_create(name=name)
