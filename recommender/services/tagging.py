"""Automatic category and style tags for images that have none (the worker runs them after embedding).

* Category: every catalogue Item and WardrobeItem without a category gets one from the backbone's ImageNet
  head (ml.tagging.category), loaded once per process. A category set by a user or an admin is never
  overwritten: the tag is written with `UPDATE ... WHERE category_id IS NULL`.
* Style: a Look or WardrobeItem without a style gets `suggest_style(vector)` from a small classifier
  (ml.tagging.style, logistic regression) trained on the hand-labelled looks (data/labels/look_styles.csv,
  with the style each of those looks has in the database, so an admin's correction counts) and their
  descriptors under the active version (looks: the mean descriptor of their snapshots; uploads: their own
  descriptor, classified by the same look model, see UPLOAD_STYLE_MODEL). The suggestion is stored only where
  the style is still empty.

`on_descriptors_ready` (connected in RecommenderConfig.ready) queues `recommender.tasks.tag_images` with the
ids of the images that turned ready and have no category or style; `manage.py tag_categories` tags everything
still untagged in-process.
"""
import csv
import logging
import threading
from pathlib import Path

import numpy as np
from django.conf import settings

from fashionsite.paths import PROJECT_ROOT
from recommender.models import Category, Descriptor, Item, Look, LookItem, Style
from recommender.signals import wardrobe_items_tagged
from recommender.taxonomy import CATEGORIES, STYLES

logger = logging.getLogger(__name__)

TAGGER_VARIANT = "lite0"  # the classifier head is the ImageNet backbone's, whatever model version is active
STYLE_METHOD = "logreg"
# Which classifier suggests an upload's style: the look model (trained on snapshots) classified single item
# photos better in bench/style_accuracy.py than a model trained on item photos (25.8% vs 20.3%, both below the
# 29.8% majority baseline: one item says little about a look's style).
UPLOAD_STYLE_MODEL = "look"
LOOK_LABELS = PROJECT_ROOT / "data" / "labels" / "look_styles.csv"
BATCH_SIZE = 32

_lock = threading.Lock()
_tagger = None
_style_models: dict[tuple, object] = {}


# ---------------------------------------------------------------------------------------------- categories


def get_tagger():
    """The process's CategoryTagger (built on first use, after any fork; never at import)."""
    global _tagger
    with _lock:
        if _tagger is None:
            from ml.tagging.category import CategoryTagger

            _tagger = CategoryTagger(TAGGER_VARIANT, settings.MODEL_CACHE_DIR)
        return _tagger


def _categories_by_name() -> dict[str, Category]:
    found = {c.name: c for c in Category.objects.filter(name__in=CATEGORIES)}
    for name in CATEGORIES:  # the migration creates them; a flushed test database may not have them
        if name not in found:
            found[name], _ = Category.objects.get_or_create(name=name)
    return found


def tag_categories(item_ids=(), wardrobe_item_ids=(), progress: bool = False) -> dict:
    """Tags the given Items and WardrobeItems that have no category; idempotent. Returns counts."""
    from wardrobe.models import WardrobeItem

    outcome = {"tagged": 0, "failed": 0}
    tagged_wardrobe = []
    jobs = [
        (Item, list(Item.objects.filter(id__in=list(item_ids), category__isnull=True).only("id", "image"))),
        (WardrobeItem, list(WardrobeItem.objects.filter(id__in=list(wardrobe_item_ids), category__isnull=True)
                            .only("id", "image"))),
    ]
    if not any(rows for _, rows in jobs):
        return outcome
    tagger, categories = get_tagger(), _categories_by_name()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(rows) for _, rows in jobs), desc="tagging categories", unit="img")
    for model, rows in jobs:
        for start in range(0, len(rows), BATCH_SIZE):
            batch = rows[start:start + BATCH_SIZE]
            # read through the storage API (never a local path): STORAGES may be S3-compatible storage
            by_path = {row.image.name: row for row in batch}
            tags, errors = tagger.tag_files(list(by_path), batch_size=BATCH_SIZE,
                                            open_file=lambda name: by_path[name].image.storage.open(name, "rb"))
            for path, message in errors.items():
                logger.warning("category tagging skipped %s %s: %s", model.__name__, by_path[path].pk, message)
            for tag in tags:  # one short statement each (no long transaction holding locks)
                changed = model.objects.filter(pk=by_path[tag.path].pk, category__isnull=True).update(
                    category=categories[tag.category]
                )
                outcome["tagged"] += changed
                if changed and model is WardrobeItem:
                    tagged_wardrobe.append(by_path[tag.path].pk)
            outcome["failed"] += len(errors)
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    if tagged_wardrobe:
        wardrobe_items_tagged.send(sender=WardrobeItem, wardrobe_item_ids=tagged_wardrobe)
    return outcome


# --------------------------------------------------------------------------------------------------- styles


def labelled_look_keys(path: Path = LOOK_LABELS) -> set[str]:
    if not Path(path).is_file():
        return set()
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["look"].strip() for row in csv.DictReader(handle)}


def _training_looks():
    """(look id, style name) of the hand-labelled looks that have a style in the database. Falls back to every
    look with a style when the catalogue shares no look with the label file."""
    looks = Look.objects.filter(style__isnull=False)
    keys = labelled_look_keys()
    labelled = looks.filter(key__in=keys) if keys else looks.none()
    if not labelled.exists():
        labelled = looks
    return list(labelled.order_by("id").values_list("id", "style__name"))


def _training_set(kind: str, version):
    looks = _training_looks()
    style_of = dict(looks)
    ready = Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY)
    vectors, styles = [], []
    if kind == "look":
        by_look: dict[int, list] = {}
        for look_id, vector in ready.filter(snapshot__look_id__in=style_of).values_list(
            "snapshot__look_id", "embedding"
        ):
            by_look.setdefault(look_id, []).append(np.asarray(vector, np.float32))
        from ml.tagging.style import look_vector

        for look_id in sorted(by_look):
            vectors.append(look_vector(by_look[look_id]))
            styles.append(style_of[look_id])
    else:
        item_vectors = dict(ready.filter(item__looks__in=list(style_of)).values_list("item_id", "embedding"))
        for look_id, item_id in LookItem.objects.filter(look_id__in=style_of).order_by("id").values_list(
            "look_id", "item_id"
        ):
            if item_id in item_vectors:
                vectors.append(np.asarray(item_vectors[item_id], np.float32))
                styles.append(style_of[look_id])
    return vectors, styles


def style_model(kind: str = "look", version=None):
    """The style classifier for `kind` ('look' or 'item') under the version (active by default), trained on the
    labelled looks and cached per process until the labels change; None without training data."""
    from ml.tagging.style import StyleClassifier

    from recommender.services.versions import active_version

    version = version or active_version()
    vectors, styles = _training_set(kind, version)
    if not vectors or len(set(styles)) < 2:
        return None
    signature = (kind, version.id, len(vectors), hash(tuple(styles)))
    with _lock:
        model = _style_models.get(signature)
        if model is None:
            model = StyleClassifier(STYLE_METHOD).fit(np.stack(vectors), styles)
            if len(_style_models) > 8:
                _style_models.clear()
            _style_models[signature] = model
        return model


def suggest_style(vector, kind: str = "look", version=None) -> tuple[str, float] | None:
    """(style, confidence) for a descriptor under the version (active by default): a look's mean snapshot
    descriptor (kind='look') or one item photo's (kind='item'). None when there are no labelled looks."""
    model = style_model(kind, version)
    if model is None:
        return None
    return model.suggest(np.asarray(vector, np.float32))


def suggest_styles(look_ids=(), wardrobe_item_ids=(), version=None) -> dict:
    """Stores a suggested style on the given Looks and WardrobeItems that have none and a ready descriptor
    under the version (active by default); idempotent. Returns counts."""
    from ml.tagging.style import look_vector

    from recommender.services.versions import active_version
    from wardrobe.models import WardrobeItem

    version = version or active_version()
    outcome = {"looks": 0, "wardrobe_items": 0}
    looks = list(Look.objects.filter(id__in=list(look_ids), style__isnull=True).values_list("id", flat=True))
    items = list(WardrobeItem.objects.filter(id__in=list(wardrobe_item_ids), style__isnull=True)
                 .values_list("id", flat=True))
    if not looks and not items:
        return outcome
    styles = {name: Style.objects.get_or_create(name=name)[0] for name in STYLES}
    ready = Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY)
    if looks:
        by_look: dict[int, list] = {}
        for look_id, vector in ready.filter(snapshot__look_id__in=looks).values_list("snapshot__look_id", "embedding"):
            by_look.setdefault(look_id, []).append(np.asarray(vector, np.float32))
        for look_id, vectors in sorted(by_look.items()):
            suggestion = suggest_style(look_vector(vectors), "look", version)
            if suggestion and suggestion[0] in styles:
                outcome["looks"] += Look.objects.filter(pk=look_id, style__isnull=True).update(
                    style=styles[suggestion[0]]
                )
    if items:
        for item_id, vector in ready.filter(wardrobe_item_id__in=items).values_list("wardrobe_item_id", "embedding"):
            suggestion = suggest_style(np.asarray(vector, np.float32), UPLOAD_STYLE_MODEL, version)
            if suggestion and suggestion[0] in styles:
                outcome["wardrobe_items"] += WardrobeItem.objects.filter(pk=item_id, style__isnull=True).update(
                    style=styles[suggestion[0]]
                )
    return outcome


# ------------------------------------------------------------------------------------------------- the hook


def tag_images(item_ids=(), wardrobe_item_ids=(), look_ids=()) -> dict:
    """What the `tag_images` task does: categories for items and uploads, styles for looks and uploads."""
    outcome = tag_categories(item_ids, wardrobe_item_ids)
    outcome.update(suggest_styles(look_ids, wardrobe_item_ids))
    return outcome


def on_descriptors_ready(sender, descriptors, **kwargs):
    """Receiver of `descriptors_ready` (in the worker): queues `tag_images` for the images that turned ready
    and still lack a category or style. Never raises: tagging must not fail the embedding task."""
    if not settings.AUTO_TAGGING:
        return
    try:
        item_ids, wardrobe_ids, look_ids = set(), set(), set()
        for d in descriptors:
            if d.item_id and d.item.category_id is None:
                item_ids.add(d.item_id)
            elif d.wardrobe_item_id and (d.wardrobe_item.category_id is None or
                                         (d.wardrobe_item.style_id is None and d.model_version.is_active)):
                wardrobe_ids.add(d.wardrobe_item_id)
            elif d.snapshot_id and d.model_version.is_active:
                look_ids.add(d.snapshot.look_id)
        if look_ids:
            look_ids = set(Look.objects.filter(id__in=look_ids, style__isnull=True).values_list("id", flat=True))
        if not (item_ids or wardrobe_ids or look_ids):
            return

        from fashionsite.queueing import BULK_QUEUE, INTERACTIVE_QUEUE, enqueue

        # an upload's tags are waited for (its own queue); the catalogue's go with the bulk work
        # (broker unreachable: logged, and `manage.py tag_categories` catches up later)
        enqueue("recommender.tasks.tag_images", (sorted(item_ids), sorted(wardrobe_ids), sorted(look_ids)),
                queue=INTERACTIVE_QUEUE if wardrobe_ids else BULK_QUEUE)
    except Exception:  # noqa: BLE001
        logger.exception("tagging receiver failed; the images stay untagged until `tag_categories`")


def untagged_ids() -> dict:
    """Ids of everything without a category or style that has what tagging needs."""
    from wardrobe.models import WardrobeItem

    return {
        "item_ids": list(Item.objects.filter(category__isnull=True).values_list("id", flat=True)),
        "wardrobe_item_ids": list(
            WardrobeItem.objects.filter(category__isnull=True).values_list("id", flat=True).union(
                WardrobeItem.objects.filter(style__isnull=True).values_list("id", flat=True))
        ),
        "look_ids": list(Look.objects.filter(style__isnull=True).values_list("id", flat=True)),
    }
