"""Helpers for the REST API tests: users with tokens, image files made in the test, a small real catalogue
embedded by the real worker."""
import io
import itertools

import pytest
from django.core.cache import cache
from PIL import Image
from rest_framework.test import APIClient

from tests.conftest import wait_until

# Categories and styles assigned to the imported sample looks (the sample folder carries neither).
CATEGORIES = ("top", "bottom", "shoes", "bag", "outerwear", "hat")
STYLES = ("street/hip-hop", "formal/classic")


@pytest.fixture(autouse=True)
def fresh_throttle_history():
    """Throttle counters live in the cache; every test starts with none."""
    cache.clear()
    yield
    cache.clear()


_names = itertools.count()


@pytest.fixture
def make_user(db):
    """make_user(staff=False) -> (user, APIClient authenticated with the user's token)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    def make(staff: bool = False, username: str | None = None):
        username = username or f"user{next(_names)}"
        user = get_user_model().objects.create_user(username=username, password="pass-word-123", is_staff=staff)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        return user, client

    return make


@pytest.fixture
def taxonomy(db):
    """The category and style rows (transactional tests flush the data migration's rows)."""
    from recommender.models import Category, Style

    for name in CATEGORIES:
        Category.objects.get_or_create(name=name)
    for name in STYLES:
        Style.objects.get_or_create(name=name)


def image_bytes(mode="RGB", size=(96, 128), fmt="JPEG", colour=None, **save_args) -> bytes:
    """A real encoded image with a little structure (a gradient and a block)."""
    width, height = size
    image = Image.new("RGB", size, colour or (200, 40, 40))
    for x in range(0, width, 4):
        for y in range(0, height // 2, 4):
            image.putpixel((x, y), (x % 256, y % 256, 128))
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def upload(name: str, data: bytes, content_type: str = "image/jpeg"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


def manifest_entries(folder, looks):
    """Import entries for the copied looks, with a style per look (alternating) and a category per item."""
    from recommender.services.catalogue import entries_from_folder, ImportEntry

    entries = []
    style_of = {str(look): STYLES[i % len(STYLES)] for i, look in enumerate(looks)}
    item_index = itertools.count()
    for entry in entries_from_folder(folder):
        category = ""
        if entry.role == "item":
            category = CATEGORIES[next(item_index) % (len(CATEGORIES) - 1)]  # "hat" is given once, below
        entries.append(
            ImportEntry(look=entry.look, role=entry.role, path=entry.path, style=style_of[entry.look], category=category)
        )
    # exactly one hat in the catalogue, so a hat filter keeps only some suggestions
    first_item = next(i for i, e in enumerate(entries) if e.role == "item")
    entries[first_item] = ImportEntry(**{**entries[first_item].__dict__, "category": "hat"})
    return entries


def import_and_embed(sample_dir, tmp_path, looks):
    """Imports real sample looks (styles and categories assigned) and waits until the worker embedded all."""
    from recommender.models import Descriptor, Item, Snapshot
    from recommender.services.catalogue import import_entries
    from tests.conftest import copy_looks

    folder = copy_looks(sample_dir, looks, tmp_path / "looks")
    report = import_entries(manifest_entries(folder, looks))
    assert not report.skipped
    total = Snapshot.objects.count() + Item.objects.count()
    wait_until(
        lambda: Descriptor.objects.filter(status=Descriptor.Status.READY, wardrobe_item__isnull=True).count() == total,
        timeout=300,
        message="the worker embeds every imported image",
    )
    return folder
