"""A low-confidence automatic category is a suggestion: the API and the pages say so, and the owner's confirm
or change (or an admin's correction) is kept as a label the tagger is trained on."""
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from recommender.models import Category, CategorySource, Item
from recommender.taxonomy import CATEGORY_SUGGESTION_THRESHOLD
from tests.api.conftest import image_bytes, upload
from wardrobe.models import WardrobeItem
from wardrobe.services import add_wardrobe_items

pytestmark = pytest.mark.django_db

UNSURE = round(CATEGORY_SUGGESTION_THRESHOLD / 2, 2)
SURE = round((1 + CATEGORY_SUGGESTION_THRESHOLD) / 2, 2)


def auto_tagged(user, category: str, confidence: float) -> WardrobeItem:
    """An upload as the tagger leaves it (the tagger itself runs in tests/test_tagging.py)."""
    (item,) = add_wardrobe_items(user, [upload("a.jpg", image_bytes())])
    WardrobeItem.objects.filter(pk=item.pk).update(
        category=Category.objects.get(name=category), category_source=CategorySource.AUTO,
        category_confidence=confidence,
    )
    return WardrobeItem.objects.get(pk=item.pk)


def test_the_api_shows_an_unsure_tag_as_a_suggestion_and_a_confirm_keeps_it_as_a_label(
    make_user, active_version, taxonomy
):
    user, client = make_user()
    unsure, sure = auto_tagged(user, "outerwear", UNSURE), auto_tagged(user, "shoes", SURE)

    body = client.get(f"/api/wardrobe/items/{unsure.pk}/").json()
    assert (body["category"], body["category_source"], body["category_suggested"]) == ("outerwear", "auto", True)
    assert body["category_confidence"] == pytest.approx(UNSURE)
    assert client.get(f"/api/wardrobe/items/{sure.pk}/").json()["category_suggested"] is False

    # confirming is giving the suggested category back: now the owner's label, no longer a suggestion
    body = client.patch(f"/api/wardrobe/items/{unsure.pk}/", {"category": "outerwear"}, format="json").json()
    assert (body["category"], body["category_source"], body["category_confidence"], body["category_suggested"]) == (
        "outerwear", "user", None, False)
    # changing it is a label too
    body = client.patch(f"/api/wardrobe/items/{sure.pk}/", {"category": "bag"}, format="json").json()
    assert (body["category"], body["category_source"]) == ("bag", "user")
    stored = WardrobeItem.objects.get(pk=sure.pk)
    assert (stored.category.name, stored.category_source, stored.category_confidence) == ("bag", "user", None)
    # clearing it leaves no label behind
    body = client.patch(f"/api/wardrobe/items/{sure.pk}/", {"category": ""}, format="json").json()
    assert (body["category"], body["category_source"]) == (None, "")
    # a category given at upload is the user's own
    (given,) = add_wardrobe_items(user, [upload("b.jpg", image_bytes())], category="hat")
    assert given.category_source == "user"


def test_the_wardrobe_page_offers_to_confirm_an_unsure_tag(make_user, active_version, taxonomy):
    user, _ = make_user()
    unsure, sure = auto_tagged(user, "top", UNSURE), auto_tagged(user, "bottom", SURE)
    browser = Client()
    browser.force_login(user)

    page = browser.get("/wardrobe/").content.decode()
    assert page.count('data-testid="category-suggestion"') == 1
    assert f"Suggested: top? ({round(UNSURE * 100)} % sure)" in page

    response = browser.post(f"/wardrobe/items/{unsure.pk}/edit/", {"category": "top"})
    assert response.status_code == 302
    unsure.refresh_from_db()
    assert (unsure.category.name, unsure.category_source) == ("top", "user")
    assert 'data-testid="category-suggestion"' not in browser.get("/wardrobe/").content.decode()
    sure.refresh_from_db()
    assert sure.category_source == "auto", "the other item's tag is untouched"


def test_staff_correct_a_catalogue_item_on_its_display_and_others_cannot(make_user, active_version, taxonomy):
    from django.core.files.base import ContentFile

    from recommender.models import Look, LookItem

    look = Look.objects.create(key="tag-test")
    item = Item(sha256="f" * 64, original_name="x.jpg", category=Category.objects.get(name="top"),
                category_source=CategorySource.AUTO, category_confidence=UNSURE)
    item.image.save("x.jpg", ContentFile(image_bytes()), save=True)
    LookItem.objects.create(look=look, item=item)

    visitor = Client()
    page = visitor.get(f"/looks/{look.pk}/").content.decode()
    assert 'data-testid="suggested-category"' in page and "top?" in page
    assert 'data-testid="item-category-form"' not in page, "only staff may correct the catalogue"
    user, _ = make_user()
    visitor.force_login(user)
    assert visitor.post(f"/items/{item.pk}/category/", {"category": "outerwear"}).status_code == 403

    staff = Client()
    staff.force_login(get_user_model().objects.create_user("staffer", password="pass-word-123", is_staff=True))
    assert 'data-testid="item-category-form"' in staff.get(f"/looks/{look.pk}/").content.decode()
    assert staff.post(f"/items/{item.pk}/category/", {"category": "moon boots"}).status_code == 400
    response = staff.post(f"/items/{item.pk}/category/", {"category": "outerwear", "next": f"/looks/{look.pk}/"})
    assert response.status_code == 302 and response["Location"] == f"/looks/{look.pk}/"
    item.refresh_from_db()
    assert (item.category.name, item.category_source, item.category_confidence) == ("outerwear", "admin", None)
    assert 'data-testid="suggested-category"' not in staff.get(f"/looks/{look.pk}/").content.decode()


def test_an_admin_correction_in_the_admin_is_kept_as_an_admin_label(make_user, active_version, taxonomy):
    from django.core.files.base import ContentFile

    item = Item(sha256="e" * 64, original_name="y.jpg", category=Category.objects.get(name="top"),
                category_source=CategorySource.AUTO, category_confidence=SURE)
    item.image.save("y.jpg", ContentFile(image_bytes()), save=True)
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("boss", "boss@example.com", "pass-word-123"))
    shoes = Category.objects.get(name="shoes")
    response = admin.post(f"/admin/recommender/item/{item.pk}/change/", {
        "image": "", "sha256": item.sha256, "original_name": item.original_name, "category": shoes.pk,
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    item.refresh_from_db()
    assert (item.category.name, item.category_source, item.category_confidence) == ("shoes", "admin", None)
