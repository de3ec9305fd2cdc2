"""Automatic category and style tags for images that have none (the worker runs them after embedding).

* Category: every catalogue Item and WardrobeItem without a category gets one from a trained category head
  (ml.tagging.category.CategoryHead, softmax regression) applied to the image's descriptor under the active
  model version: no second forward pass, the embedding already computed what the head reads. The tag is
  stored with its confidence (`category_confidence`, source "auto"); below the suggestion threshold the pages
  show it as a suggestion to confirm or change. A category set by a person is never overwritten: the tag is
  written with `UPDATE ... WHERE category_id IS NULL`.
  Which head (`category_head`): the one trained for that version (`train_category_head`, stored beside the
  model, from the labels: categories whose source is hand, user or admin, with their descriptors under that
  version); for an untrained ImageNet version without one, the head shipped in ml/tagging/heads (its descriptor
  is the very ImageNet feature that head was trained on). A trained version gets its head at its first use
  (after its re-embedding), again whenever `manage.py train_tagger` runs. Images without a descriptor under
  the active version, or a version whose head would be worse than the shipped one, are tagged from the file
  by the shipped ImageNet tagger (one extra Lite0 forward pass).
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
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from fashionsite.paths import PROJECT_ROOT
from recommender.models import LABEL_SOURCES, Category, CategorySource, Descriptor, Item, Look, LookItem, Style
from recommender.signals import wardrobe_items_tagged
from recommender.taxonomy import CATEGORIES, STYLES

logger = logging.getLogger(__name__)

FILE_TAGGER_VARIANT = "lite0"  # the fallback reads the file through the ImageNet Lite0 backbone + shipped head
STYLE_METHOD = "logreg"
# Which classifier suggests an upload's style: the look model (trained on snapshots) classified single item
# photos better in bench/style_accuracy.py than a model trained on item photos (25.8% vs 20.3%, both below the
# 29.8% majority baseline: one item says little about a look's style).
UPLOAD_STYLE_MODEL = "look"
LOOK_LABELS = PROJECT_ROOT / "data" / "labels" / "look_styles.csv"
BATCH_SIZE = 32
# A version's own head needs this many labelled descriptors; with fewer, the shipped ImageNet head serves.
MIN_LABELS_TO_TRAIN = 40
MAX_LABELS_PER_CATEGORY = 3000  # 8 x 3000 x 1280 floats: at most ~120 MB while training
# The head's settings, chosen by 5-fold cross-validation on the hand labels (docs/RESULTS.md, issue 12).
HEAD_PARAMS = {"l2": 1e-4, "class_weight": "balanced", "steps": 400}
# A trained version's head must cross-validate at least this close to the shipped head, or the shipped
# ImageNet tagger (a second, Lite0 forward pass) tags instead: a look-matching descriptor may forget category.
HEAD_TOLERANCE = 0.03

_lock = threading.Lock()
_tagger = None
_heads: dict[tuple, object] = {}
_style_models: dict[tuple, object] = {}


# ---------------------------------------------------------------------------------------------- categories


class NotEnoughLabels(ValueError):
    """Too few labelled descriptors under a version to train its category head."""




def get_tagger():
    """The process's file CategoryTagger (built on first use, after any fork; never at import)."""
    global _tagger
    with _lock:
        if _tagger is None:
            from ml.tagging.category import CategoryTagger

            _tagger = CategoryTagger(FILE_TAGGER_VARIANT, settings.MODEL_CACHE_DIR)
        return _tagger


def head_path(version) -> Path:
    """Where a version's category head lives: beside a trained model, or under the model cache."""
    from ml.tagging.category import feature_space_of

    if feature_space_of(version.spec) is None and Path(version.spec).is_dir():
        return Path(version.spec) / "category_head.npz"
    return Path(settings.MODEL_CACHE_DIR) / "category_heads" / f"{version.name}.npz"


def _shipped_head_path(version):
    from ml.tagging.category import feature_space_of, shipped_head_path

    space = feature_space_of(version.spec)
    path = shipped_head_path(space) if space else None
    return path if path is not None and path.is_file() else None


def labelled_vectors(version, per_category: int = MAX_LABELS_PER_CATEGORY) -> tuple[np.ndarray, list[str], dict]:
    """The labels the head is trained on: Items and WardrobeItems whose category a person set (admin, user,
    hand: in that order, so corrections come first), with their ready descriptor under the version; at most
    `per_category` of each category (memory stays bounded however large the catalogue). Returns (vectors,
    categories, counts by source)."""
    ready = Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY)
    vectors, categories, sources, taken = [], [], {}, {}
    for source in LABEL_SOURCES:
        for owner in ("item", "wardrobe_item"):
            rows = ready.filter(**{f"{owner}__category__isnull": False, f"{owner}__category_source": source})
            for vector, name in rows.order_by("-id").values_list("embedding", f"{owner}__category__name").iterator(
                chunk_size=500
            ):
                if name in CATEGORIES and taken.get(name, 0) < per_category:
                    vectors.append(np.asarray(vector, np.float32))
                    categories.append(name)
                    taken[name] = taken.get(name, 0) + 1
                    sources[str(source)] = sources.get(str(source), 0) + 1
    matrix = np.stack(vectors) if vectors else np.zeros((0, version.dim), np.float32)
    return matrix, categories, sources


def train_category_head(version, cross_validation: bool = True, log=None):
    """Trains the version's category head on its labels and stores it (`head_path`); returns (head, meta).
    With `cross_validation`, meta carries the 5-fold accuracy (what decides between this head and the
    shipped one). Raises NotEnoughLabels below MIN_LABELS_TO_TRAIN labels or with one category only."""
    from ml.tagging.category import CategoryHead, cross_validate

    started = time.perf_counter()
    vectors, categories, sources = labelled_vectors(version)
    if len(categories) < MIN_LABELS_TO_TRAIN or len(set(categories)) < 2:
        raise NotEnoughLabels(
            f"{version.name}: {len(categories)} labelled descriptors of {len(set(categories))} categories; "
            f"a category head needs at least {MIN_LABELS_TO_TRAIN} of two or more"
        )
    meta = {"version": version.name, "spec": version.spec, "labels": len(categories), "sources": sources,
            "categories": {c: categories.count(c) for c in CATEGORIES if c in categories},
            "params": HEAD_PARAMS, "trained": timezone.now().isoformat(timespec="seconds")}
    if cross_validation:
        (result,) = cross_validate(vectors, categories, [HEAD_PARAMS])
        meta["cv_accuracy"], meta["cv_balanced_accuracy"] = result["accuracy"], result["balanced_accuracy"]
        if log:
            log(f"5-fold cross-validated accuracy {result['accuracy']:.3f} "
                f"(balanced {result['balanced_accuracy']:.3f}) on {len(categories)} labels")
    head = CategoryHead(**HEAD_PARAMS).fit(vectors, categories)
    meta["seconds"] = round(time.perf_counter() - started, 2)
    head.save(head_path(version), meta)
    with _lock:
        _heads.clear()
    return head, meta


def _good_enough(head, version) -> bool:
    """A trained version's head is used unless it cross-validated clearly worse than the shipped head."""
    from ml.tagging.category import CategoryHead, shipped_head_path

    shipped = shipped_head_path(f"imagenet-{FILE_TAGGER_VARIANT}")
    if not shipped.is_file() or "cv_accuracy" not in head.meta:
        return True
    reference = CategoryHead.load(shipped).meta.get("cv_accuracy")
    if reference is None or head.meta["cv_accuracy"] >= reference - HEAD_TOLERANCE:
        return True
    logger.warning("%s: its category head cross-validates at %.3f, the shipped one at %.3f; tagging from the "
                   "files instead", version.name, head.meta["cv_accuracy"], reference)
    return False


def category_head(version):
    """The head that tags from the version's descriptors, or None (then the file tagger serves): its own
    trained head, else the shipped ImageNet head of its feature space, else one trained now from the labels.
    Cached per process until the head's file changes."""
    from ml.tagging.category import CategoryHead

    path = head_path(version)
    if not path.is_file() and _shipped_head_path(version) is None:
        try:
            train_category_head(version)
        except NotEnoughLabels as reason:
            logger.info("no category head for %s yet: %s", version.name, reason)
            return None
        except OSError as error:  # e.g. a read-only model folder: the file tagger serves meanwhile
            logger.warning("could not store the category head of %s: %s", version.name, error)
            return None
    source = path if path.is_file() else _shipped_head_path(version)
    key = (version.id, str(source), source.stat().st_mtime_ns)
    with _lock:
        if key not in _heads:
            head = CategoryHead.load(source)
            if head.dim != version.dim:
                logger.warning("%s: category head %s takes %d-d vectors, the version has %d-d", version.name,
                               source, head.dim, version.dim)
                head = None
            elif source == path and _shipped_head_path(version) is None and not _good_enough(head, version):
                head = None
            _heads.clear()
            _heads[key] = head
        return _heads[key]


def retag_automatic() -> int:
    """Re-tags every automatic category with the active version's current head (after `train_tagger`), so a
    correction improves the other tags too; never touches a category a person set. Returns how many
    changed."""
    from recommender.services.versions import active_version
    from wardrobe.models import WardrobeItem

    version = active_version()
    head = category_head(version)
    if head is None:
        return 0
    categories, changed, changed_wardrobe = _categories_by_name(), 0, []
    for model in (Item, WardrobeItem):
        ids = list(model.objects.filter(category_source=CategorySource.AUTO).order_by("id").values_list("id", flat=True))
        for start in range(0, len(ids), 500):
            rows = list(model.objects.filter(id__in=ids[start:start + 500]).only("id"))
            for pk, (name, confidence) in _tags_from_descriptors(model, rows, version, head).items():
                confidence = round(float(confidence), 4)
                updated = model.objects.filter(pk=pk, category_source=CategorySource.AUTO).exclude(
                    category=categories[name], category_confidence=confidence
                ).update(category=categories[name], category_confidence=confidence)
                changed += updated
                if updated and model is WardrobeItem:
                    changed_wardrobe.append(pk)
    if changed_wardrobe:  # their owners' suggestions depend on the categories
        wardrobe_items_tagged.send(sender=WardrobeItem, wardrobe_item_ids=changed_wardrobe)
    return changed


def apply_hand_labels(labels_csv, images_dir) -> dict:
    """Marks the catalogue items a hand-label file names (columns file, category; the images in
    `images_dir`, matched by SHA-256) with that category, source "hand"; a category a user or an admin set
    stays. For a database imported before the labels or without the manifest's categories."""
    import hashlib

    images_dir = Path(images_dir)
    categories = _categories_by_name()
    by_sha = {}
    with open(labels_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name, category = row["file"].strip(), row["category"].strip()
            if category not in categories:
                raise ValueError(f"{labels_csv}: unknown category {category!r} for {name}")
            path = images_dir / name
            if path.is_file():
                by_sha[hashlib.sha256(path.read_bytes()).hexdigest()] = categories[category]
    outcome = {"labels": len(by_sha), "applied": 0}
    for sha, category in by_sha.items():
        outcome["applied"] += Item.objects.filter(sha256=sha).exclude(
            category_source__in=[CategorySource.USER, CategorySource.ADMIN]
        ).update(category=category, category_source=CategorySource.HAND, category_confidence=None)
    return outcome


def set_item_category(item_id, category, source: str):
    """A person's category for a catalogue item (staff on the item display): stored as a label of `source`.
    Returns the item, or None when there is no such item."""
    item = Item.objects.filter(pk=item_id).first()
    if item is not None:
        item.set_category_label(category, source)
        item.save(update_fields=["category", "category_source", "category_confidence"])
    return item


def _categories_by_name() -> dict[str, Category]:
    found = {c.name: c for c in Category.objects.filter(name__in=CATEGORIES)}
    for name in CATEGORIES:  # the migration creates them; a flushed test database may not have them
        if name not in found:
            found[name], _ = Category.objects.get_or_create(name=name)
    return found


def _tags_from_descriptors(model, rows, version, head) -> dict[int, tuple[str, float]]:
    """pk -> (category, confidence) for the rows with a ready descriptor under the version."""
    if head is None or not rows:
        return {}
    column = "item_id" if model is Item else "wardrobe_item_id"
    found = dict(Descriptor.objects.filter(model_version=version, status=Descriptor.Status.READY,
                                           **{f"{column}__in": [row.pk for row in rows]})
                 .values_list(column, "embedding"))
    if not found:
        return {}
    pks = sorted(found)
    predictions = head.predict(np.stack([np.asarray(found[pk], np.float32) for pk in pks]))
    return dict(zip(pks, predictions))


def _tags_from_files(model, rows) -> tuple[dict[int, tuple[str, float]], int]:
    """pk -> (category, confidence) from the image files (second forward pass), and the unreadable count."""
    if not rows:
        return {}, 0
    # read through the storage API (never a local path): STORAGES may be S3-compatible storage
    by_path = {row.image.name: row for row in rows}
    tags, errors = get_tagger().tag_files(list(by_path), batch_size=BATCH_SIZE,
                                          open_file=lambda name: by_path[name].image.storage.open(name, "rb"))
    for path, message in errors.items():
        logger.warning("category tagging skipped %s %s: %s", model.__name__, by_path[path].pk, message)
    return {by_path[tag.path].pk: (tag.category, tag.confidence) for tag in tags}, len(errors)


def tag_categories(item_ids=(), wardrobe_item_ids=(), progress: bool = False) -> dict:
    """Tags the given Items and WardrobeItems that have no category; idempotent. Returns counts:
    `tagged`, `failed` (unreadable files) and `from_files` (how many needed the second forward pass)."""
    from recommender.services.versions import active_version
    from wardrobe.models import WardrobeItem

    outcome = {"tagged": 0, "failed": 0, "from_files": 0}
    tagged_wardrobe = []
    jobs = [
        (Item, list(Item.objects.filter(id__in=list(item_ids), category__isnull=True).only("id", "image"))),
        (WardrobeItem, list(WardrobeItem.objects.filter(id__in=list(wardrobe_item_ids), category__isnull=True)
                            .only("id", "image"))),
    ]
    if not any(rows for _, rows in jobs):
        return outcome
    version = active_version()
    head, categories = category_head(version), _categories_by_name()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(rows) for _, rows in jobs), desc="tagging categories", unit="img")
    for model, rows in jobs:
        for start in range(0, len(rows), BATCH_SIZE):
            batch = rows[start:start + BATCH_SIZE]
            tags = _tags_from_descriptors(model, batch, version, head)
            from_files, failed = _tags_from_files(model, [row for row in batch if row.pk not in tags])
            tags.update(from_files)
            outcome["from_files"] += len(from_files)
            for pk, (name, confidence) in tags.items():  # one short statement each (no long-held locks)
                changed = model.objects.filter(pk=pk, category__isnull=True).update(
                    category=categories[name], category_source=CategorySource.AUTO,
                    category_confidence=round(float(confidence), 4),
                )
                outcome["tagged"] += changed
                if changed and model is WardrobeItem:
                    tagged_wardrobe.append(pk)
            outcome["failed"] += failed
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
    """What the `tag_images` task does: categories for items and uploads, styles for looks and uploads. When it
    has run through, the images' tagging is no longer outstanding (see `queue_tagging`)."""
    outcome = tag_categories(item_ids, wardrobe_item_ids)
    outcome.update(suggest_styles(look_ids, wardrobe_item_ids))
    outstanding(item_ids, wardrobe_item_ids, look_ids).update(tagging_sent_at=None)
    return outcome


def outstanding(item_ids=(), wardrobe_item_ids=(), look_ids=()):
    """The descriptor rows of these images whose tagging was sent and has not finished."""
    images = Q(item_id__in=list(item_ids)) | Q(wardrobe_item_id__in=list(wardrobe_item_ids)) | Q(
        snapshot__look_id__in=list(look_ids))
    return Descriptor.objects.filter(images, tagging_sent_at__isnull=False)


def queue_tagging(descriptors) -> int:
    """Queues one `tag_images` task for the images of `descriptors` (ready rows) that still lack a category or
    a style, and marks those rows outstanding (`tagging_sent_at`, one more `tagging_attempts`) until the task
    has run; rows with nothing left to tag are marked done. Returns how many images were queued.

    The receiver of `descriptors_ready` calls it for freshly embedded images; the reconciler calls it again for
    rows whose task was lost (Redis restarted, the broker was down, the worker died mid-task)."""
    from fashionsite.queueing import BULK_QUEUE, INTERACTIVE_QUEUE, enqueue

    item_ids, wardrobe_ids, queued, rows_of_look = set(), set(), [], {}
    for d in descriptors:
        if d.item_id and d.item.category_id is None:
            item_ids.add(d.item_id)
            queued.append(d.pk)
        elif d.wardrobe_item_id and (d.wardrobe_item.category_id is None or
                                     (d.wardrobe_item.style_id is None and d.model_version.is_active)):
            wardrobe_ids.add(d.wardrobe_item_id)
            queued.append(d.pk)
        elif d.snapshot_id and d.model_version.is_active:
            rows_of_look.setdefault(d.snapshot.look_id, []).append(d.pk)
    look_ids = set(Look.objects.filter(id__in=list(rows_of_look), style__isnull=True).values_list("id", flat=True)
                   ) if rows_of_look else set()
    queued += [pk for look_id in look_ids for pk in rows_of_look[look_id]]
    sent = set(queued)
    done = [d.pk for d in descriptors if d.tagging_sent_at is not None and d.pk not in sent]
    if done:  # outstanding, but tagged meanwhile (e.g. by `manage.py tag_categories`): nothing left to send
        Descriptor.objects.filter(pk__in=done).update(tagging_sent_at=None)
    if not queued:
        return 0
    Descriptor.objects.filter(pk__in=queued).update(tagging_sent_at=timezone.now(),
                                                     tagging_attempts=F("tagging_attempts") + 1)
    # an upload's tags are waited for (its own queue); the catalogue's go with the bulk work. If the broker
    # cannot be reached the rows stay outstanding, and the reconciler sends them again.
    enqueue("recommender.tasks.tag_images", (sorted(item_ids), sorted(wardrobe_ids), sorted(look_ids)),
            queue=INTERACTIVE_QUEUE if wardrobe_ids else BULK_QUEUE)
    return len(item_ids) + len(wardrobe_ids) + len(look_ids)


def on_descriptors_ready(sender, descriptors, **kwargs):
    """Receiver of `descriptors_ready` (in the worker): queues tagging for the images that turned ready and still
    lack a category or style. Never raises: tagging must not fail the embedding task."""
    if not settings.AUTO_TAGGING:
        return
    try:
        queue_tagging(descriptors)
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
