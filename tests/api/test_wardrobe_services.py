"""The wardrobe services the web pages call too: statuses in one query, preferences, taxonomy names, colour."""
import io

import pytest
from PIL import Image

from recommender.models import Descriptor
from recommender.services.uploads import UploadError
from tests.api.conftest import image_bytes, upload
from wardrobe.models import WardrobeItem
from wardrobe.services import (
    add_wardrobe_items,
    get_preferences,
    set_preferences,
    wardrobe_item_status,
    wardrobe_statuses,
)
from wardrobe.services.wardrobe import recolour_wardrobe_items

pytestmark = pytest.mark.django_db


def test_statuses_follow_the_active_versions_descriptor_in_one_query(
    make_user, active_version, django_assert_num_queries
):
    user, _ = make_user()
    first, second, third = add_wardrobe_items(user, [upload(f"{n}.jpg", image_bytes(colour=(n * 40, 90, 90))) for n in (1, 2, 3)])
    Descriptor.objects.filter(wardrobe_item=second).update(status="ready")
    Descriptor.objects.filter(wardrobe_item=third).update(status="failed")
    other, _ = make_user()
    add_wardrobe_items(other, [upload("x.jpg", image_bytes())])

    with django_assert_num_queries(1):
        statuses = wardrobe_statuses(user)
    assert statuses == {first.id: "pending", second.id: "ready", third.id: "failed"}
    assert [wardrobe_item_status(i) for i in (first, second, third)] == ["pending", "ready", "failed"]


def test_unknown_taxonomy_names_are_value_errors_naming_them(make_user, active_version, taxonomy):
    user, _ = make_user()
    with pytest.raises(ValueError, match="'moon boots'"):
        add_wardrobe_items(user, [upload("a.jpg", image_bytes())], category="moon boots")
    with pytest.raises(ValueError, match="'gothic'"):
        set_preferences(user, "gothic", None)
    with pytest.raises(UploadError, match="b.gif"):
        add_wardrobe_items(user, [upload("a.jpg", image_bytes()), upload("b.gif", image_bytes(fmt="GIF"))])
    assert WardrobeItem.objects.count() == 0


def test_preferences_round_trip(make_user, taxonomy):
    user, _ = make_user()
    assert get_preferences(user).style is None and get_preferences(user).pk is None
    set_preferences(user, "street/hip-hop", "shoes")
    preferences = get_preferences(user)
    assert (preferences.style.name, preferences.category.name) == ("street/hip-hop", "shoes")
    set_preferences(user, "", None)
    preferences = get_preferences(user)
    assert preferences.style is None and preferences.category is None


def product_photo(*colours) -> bytes:
    """A JPEG product photo: a garment on a white studio background, in horizontal bands of the colours."""
    photo = Image.new("RGB", (200, 240), (255, 255, 255))
    band = 140 // len(colours)
    for i, colour in enumerate(colours):
        photo.paste(Image.new("RGB", (100, band), colour), (50, 50 + i * band))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "colour,name",
    [((15, 15, 15), "black"), ((128, 128, 128), "grey"), ((200, 30, 40), "red"), ((40, 90, 200), "blue"),
     ((50, 140, 60), "green"), ((250, 250, 250), "white")],
)
def test_an_upload_stores_the_garments_colour_words(make_user, active_version, colour, name):
    user, _ = make_user()
    (item,) = add_wardrobe_items(user, [upload("garment.jpg", product_photo(colour))])
    assert WardrobeItem.objects.get(pk=item.pk).colour == name


def test_recolouring_rewrites_stale_words_and_requeues_only_their_owners(
    make_user, active_version, django_capture_on_commit_callbacks
):
    owner, _ = make_user()
    other, _ = make_user()
    (two_tone,) = add_wardrobe_items(owner, [upload("fleece.jpg", product_photo((238, 230, 208), (28, 34, 68)))])
    (plain,) = add_wardrobe_items(other, [upload("tee.jpg", product_photo((200, 30, 40)))])
    assert WardrobeItem.objects.get(pk=two_tone.pk).colour in {"cream and navy", "navy and cream"}
    WardrobeItem.objects.filter(pk=two_tone.pk).update(colour="black")  # words of an older rule
    with django_capture_on_commit_callbacks() as callbacks:
        outcome, problems = recolour_wardrobe_items()
    assert outcome == {"changed": 1, "unchanged": 1, "failed": 0} and problems == []
    assert WardrobeItem.objects.get(pk=two_tone.pk).colour in {"cream and navy", "navy and cream"}
    assert WardrobeItem.objects.get(pk=plain.pk).colour == "red"
    assert len(callbacks) == 1, "only the owner whose words changed gets new suggestions"
    with django_capture_on_commit_callbacks() as callbacks:
        assert recolour_wardrobe_items() == ({"changed": 0, "unchanged": 2, "failed": 0}, [])
    assert callbacks == []
    # a file gone from storage: counted and named, the others still done, nothing else lost
    WardrobeItem.objects.filter(pk=plain.pk).update(colour="black")
    WardrobeItem.objects.get(pk=two_tone.pk).image.storage.delete(WardrobeItem.objects.get(pk=two_tone.pk).image.name)
    outcome, problems = recolour_wardrobe_items()
    assert outcome == {"changed": 1, "unchanged": 0, "failed": 1}
    assert len(problems) == 1 and f"wardrobe item {two_tone.pk}" in problems[0]
    assert WardrobeItem.objects.get(pk=plain.pk).colour == "red"


def test_everyone_with_items_or_likes_gets_a_recomputation(make_user, active_version, django_capture_on_commit_callbacks):
    from recommender.models import Look
    from wardrobe.models import LikedLook
    from wardrobe.services.wardrobe import schedule_suggestions_for_everyone

    owner, _ = make_user()
    liker, _ = make_user()
    make_user()  # neither: not queued
    add_wardrobe_items(owner, [upload("a.jpg", image_bytes())])
    LikedLook.objects.create(user=liker, look=Look.objects.create(key="9"))
    with django_capture_on_commit_callbacks() as callbacks:
        assert schedule_suggestions_for_everyone() == 2
    assert len(callbacks) == 2
