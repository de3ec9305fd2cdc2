"""Automatic category and style with the real parts: real looks imported through a manifest, a real Celery
worker embeds them and then tags what has no category or style; a category set by hand is never overwritten."""
import hashlib

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
