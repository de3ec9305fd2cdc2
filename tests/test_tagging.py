"""Automatic category and style with the real parts: real looks imported through a manifest, a real Celery
worker embeds them and then tags what has no category or style; a category set by hand is never overwritten."""
import hashlib
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management import call_command

from recommender.models import Category, Descriptor, Item, Look
from recommender.services.embedding import create_pending_descriptors, queue_embedding
from recommender.taxonomy import CATEGORIES, STYLES
from tests.conftest import copy_looks, wait_until, write_manifest

LABELLED_LOOKS = {"0": "street/hip-hop", "61": "work/military", "88": "unique/kitsch"}
UNLABELLED_LOOK = "15"  # imported without a style: it gets a suggestion
HAND_SET = ("88_8_reco.jpg", "accessory")  # a running shoe that an admin (wrongly) calls an accessory


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def catalogue(sample_dir, tmp_path, transactional_db, active_version, celery_worker_process):
    looks = [*LABELLED_LOOKS, UNLABELLED_LOOK]
    folder = copy_looks(sample_dir, looks, tmp_path / "looks")
    manifest = write_manifest(folder, tmp_path / "manifest.csv", LABELLED_LOOKS, dict([HAND_SET]))
    call_command("import_looks", str(folder), manifest=str(manifest), verbosity=0)
    assert Look.objects.get(key=UNLABELLED_LOOK).style is None
    total = Descriptor.objects.count()
    wait_until(
        lambda: Descriptor.objects.filter(status=Descriptor.Status.READY).count() == total,
        timeout=300,
        message="the worker embeds every imported image",
    )
    yield folder
    wait_until(worker_idle, timeout=120, message="the worker finishes its tasks before the database is flushed")


def worker_idle() -> bool:
    """No task running or waiting in the worker (a task writing while the test database is flushed fails it)."""
    from fashionsite.celery import app

    inspect = app.control.inspect(timeout=1)
    busy = [*((inspect.active() or {}).values()), *((inspect.reserved() or {}).values())]
    return not any(busy) and not app.connection().default_channel.client.llen("celery")


def test_untagged_items_and_looks_get_a_category_and_a_style(catalogue):
    wait_until(lambda: not Item.objects.filter(category__isnull=True).exists(), timeout=180,
               message="the worker tags every item that had no category")
    assert set(Item.objects.values_list("category__name", flat=True)) <= set(CATEGORIES)
    # the tagger sees what these obviously are
    for name, category in {"88_8_reco.jpg": None, "61_6_reco.jpg": "bag"}.items():
        item = Item.objects.get(sha256=sha256(catalogue / name))
        if category:
            assert item.category.name == category
    # the hand-set category is kept, though the tagger would say shoes
    assert Item.objects.get(sha256=sha256(catalogue / HAND_SET[0])).category.name == HAND_SET[1]

    look = wait_until(lambda: Look.objects.filter(key=UNLABELLED_LOOK, style__isnull=False).first(), timeout=120,
                      message="the look imported without a style gets a suggested one")
    assert look.style.name in STYLES
    for key, style in LABELLED_LOOKS.items():
        assert Look.objects.get(key=key).style.name == style, "labelled styles are never replaced"


def test_tag_categories_command_tags_what_is_untagged(catalogue):
    wait_until(lambda: not Item.objects.filter(category__isnull=True).exists(), timeout=180,
               message="the worker tags every item that had no category")
    bag = Item.objects.get(sha256=sha256(catalogue / "61_6_reco.jpg"))
    Item.objects.filter(pk=bag.pk).update(category=None)
    Look.objects.filter(key=UNLABELLED_LOOK).update(style=None)

    call_command("tag_categories", "--styles", verbosity=0)

    bag.refresh_from_db()
    assert bag.category.name == "bag"
    assert Item.objects.get(sha256=sha256(catalogue / HAND_SET[0])).category.name == HAND_SET[1]
    assert Look.objects.get(key=UNLABELLED_LOOK).style.name in STYLES


def test_the_task_never_overwrites_a_category_set_by_hand(catalogue):
    from recommender.tasks import tag_images

    wait_until(lambda: not Item.objects.filter(category__isnull=True).exists(), timeout=180,
               message="the worker tags every item that had no category")
    bag = Item.objects.get(sha256=sha256(catalogue / "61_6_reco.jpg"))
    shoe = Item.objects.get(sha256=sha256(catalogue / "88_8_reco.jpg"))
    hat, _ = Category.objects.get_or_create(name="hat")
    bag.category = hat  # corrected by an admin after the tagger ran
    bag.save()
    Item.objects.filter(pk=shoe.pk).update(category=None)  # untagged again: tagged again

    outcome = tag_images.delay([bag.pk, shoe.pk], [], []).get(timeout=120)

    assert outcome["tagged"] == 1
    bag.refresh_from_db()
    shoe.refresh_from_db()
    assert bag.category.name == "hat"
    assert shoe.category.name == "shoes"


def test_uploads_get_a_category_and_a_style_unless_the_user_gave_them(catalogue, sample_dir, active_version):
    from wardrobe.models import WardrobeItem

    user = get_user_model().objects.create_user("tagger-user", password="x-secret-9")
    accessory, _ = Category.objects.get_or_create(name="accessory")
    uploads = []
    for name, category in (("180_9_reco.jpg", None), ("151_3_reco.jpg", accessory)):
        data = (sample_dir / name).read_bytes()
        upload = WardrobeItem(owner=user, sha256=hashlib.sha256(data).hexdigest(), category=category)
        upload.image.save(f"{upload.sha256}.jpg", ContentFile(data), save=True)
        uploads.append(upload)
    queue_embedding([create_pending_descriptors(active_version, wardrobe_item=u).id for u in uploads])

    wait_until(lambda: WardrobeItem.objects.filter(owner=user, style__isnull=False).count() == 2, timeout=180,
               message="both uploads get a suggested style")
    untagged, hand_set = (WardrobeItem.objects.get(pk=u.pk) for u in uploads)
    assert untagged.category.name == "shoes"
    assert hand_set.category.name == "accessory"
    assert {untagged.style.name, hand_set.style.name} <= set(STYLES)


def test_tags_come_from_the_descriptors_with_a_confidence_and_training_learns_the_corrections(
    catalogue, sample_dir, active_version, monkeypatch, tmp_path
):
    import io

    import numpy as np

    from ml.tagging.category import CategoryHead
    from recommender.models import CategorySource
    from recommender.services import tagging

    wait_until(lambda: not Item.objects.filter(category__isnull=True).exists(), timeout=180,
               message="the worker tags every item that had no category")
    automatic = list(Item.objects.filter(category_source=CategorySource.AUTO).values_list("category_confidence",
                                                                                          flat=True))
    assert automatic and all(0.0 < c <= 1.0 for c in automatic), "every automatic tag stores its confidence"
    hand = Item.objects.get(sha256=sha256(catalogue / HAND_SET[0]))
    assert (hand.category_source, hand.category_confidence) == (CategorySource.HAND, None)

    # an untagged item with a ready descriptor is tagged from it: no second forward pass
    bag = Item.objects.get(sha256=sha256(catalogue / "61_6_reco.jpg"))
    Item.objects.filter(pk=bag.pk).update(category=None, category_source="", category_confidence=None)
    assert tagging.tag_categories([bag.pk]) == {"tagged": 1, "failed": 0, "from_files": 0}
    bag.refresh_from_db()
    assert (bag.category.name, bag.category_source) == ("bag", CategorySource.AUTO)

    # the repository's hand labels, and an admin's correction, are what the next training learns from
    monkeypatch.setattr(tagging, "MIN_LABELS_TO_TRAIN", 20)  # this small catalogue holds 33 items
    # this process's heads go to a folder of the test's own (the worker and later tests keep the shipped one)
    monkeypatch.setattr(tagging, "head_path", lambda version: tmp_path / "heads" / f"{version.name}.npz")
    hat = Category.objects.get_or_create(name="hat")[0]
    out = io.StringIO()
    labels = Path(__file__).resolve().parents[1] / "data" / "labels" / "item_categories.csv"
    call_command("train_tagger", "--hand-labels", str(labels), "--images", str(sample_dir), stdout=out)
    assert "hand labels" in out.getvalue() and "cross-validated accuracy" in out.getvalue()
    assert Item.objects.filter(category_source=CategorySource.HAND).count() == Item.objects.count()
    tagging.set_item_category(bag.pk, hat, CategorySource.ADMIN)  # a (deliberately odd) admin correction
    vectors, categories, sources = tagging.labelled_vectors(active_version)
    assert sources == {"admin": 1, "hand": Item.objects.count() - 1}
    assert categories[0] == "hat", "corrections come first"
    bag_vector = np.asarray(bag.descriptors.get(model_version=active_version).embedding, np.float32)
    np.testing.assert_allclose(vectors[0], bag_vector)

    call_command("train_tagger", "--retag", stdout=out)
    path = tagging.head_path(active_version)
    head = CategoryHead.load(path)
    assert head.meta["sources"] == {"admin": 1, "hand": Item.objects.count() - 1}
    assert tagging.category_head(active_version).meta == head.meta, "the trained head is the one that tags now"
    assert "re-tagged 0 automatic categories" in out.getvalue(), "no automatic tag was left to re-tag"
    bag.refresh_from_db()
    assert (bag.category.name, bag.category_source) == ("hat", CategorySource.ADMIN), "a person's label stays"
