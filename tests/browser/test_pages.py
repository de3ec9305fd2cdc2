"""The web pages in a real browser, end to end with real parts: real looks imported and embedded by the real
Celery worker, real photos uploaded through the pages, the real model answering the searches."""
import re
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from recommender.apps import warm_up_active_model
from recommender.models import Descriptor, Item, Look, Snapshot
from tests.browser.conftest import screenshot
from tests.conftest import copy_looks, wait_until, write_manifest
from wardrobe.models import WardrobeItem

pytestmark = pytest.mark.slow

# Eight looks of three styles (hand labels as in data/labels/), with the item categories labelled by hand.
LOOK_STYLES = {
    "1": "street/hip-hop", "2": "street/hip-hop", "50": "street/hip-hop",
    "29": "simple/casual", "94": "simple/casual",
    "10": "formal/classic", "102": "formal/classic",
    "142": "sporty",
}
ITEM_CATEGORIES = {
    "1_1_reco.jpg": "bag", "1_8_reco.jpg": "bottom", "2_3_reco.jpg": "outerwear", "2_10_reco.jpg": "shoes",
    "50_0_reco.jpg": "outerwear", "50_10_reco.jpg": "shoes", "29_3_reco.jpg": "outerwear", "29_10_reco.jpg": "shoes",
    "94_0_reco.jpg": "outerwear", "94_10_reco.jpg": "bottom", "10_1_reco.jpg": "outerwear", "10_8_reco.jpg": "bag",
    "102_1_reco.jpg": "outerwear", "102_9_reco.jpg": "bottom", "142_0_reco.jpg": "top", "142_9_reco.jpg": "shoes",
}
# The user's two past purchases: item photos of looks that are not in this catalogue.
WARDROBE_PHOTOS = ("0_0_reco.jpg", "8_1_reco.jpg")
PASSWORD = "a-Long-enough-passw0rd"


def ensure_taxonomy():
    """Transactional tests flush the taxonomy migration's rows; put them back."""
    from recommender.taxonomy import ensure_taxonomy as create

    create()


@pytest.fixture
def catalogue(sample_dir, tmp_path, transactional_db, active_version, celery_worker_process):
    """The eight looks imported through a manifest (styles, categories), every descriptor ready."""
    ensure_taxonomy()
    folder = copy_looks(sample_dir, LOOK_STYLES, tmp_path / "looks")
    manifest = write_manifest(folder, tmp_path / "manifest.csv", LOOK_STYLES, ITEM_CATEGORIES)
    call_command("import_looks", str(folder), "--manifest", str(manifest), verbosity=0)
    warm_up_active_model()  # as the web server does at start: the first search must not load the model
    total = Snapshot.objects.count() + Item.objects.count()
    wait_until(
        lambda: Descriptor.objects.filter(status=Descriptor.Status.READY).count() >= total,
        timeout=600,
        message="the worker embeds the imported looks",
    )
    return folder


def register(page, username: str):
    page.goto("/accounts/register/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/wardrobe/$"))
    expect(page.get_by_test_id("username")).to_have_text(username)


def read_cards(page) -> list[dict]:
    """Each suggestion card's look, style and the categories of the items that complete it."""
    return page.get_by_test_id("suggestion").evaluate_all(
        """cards => cards.map(c => ({
            look: c.dataset.lookId,
            style: c.querySelector(".meta .tag").textContent.trim(),
            categories: [...c.querySelectorAll('[data-testid="complete-with"] li')].map(li => li.dataset.category),
        }))"""
    )


def look_ids(page) -> list[str]:
    return page.get_by_test_id("suggestion").evaluate_all("cards => cards.map(c => c.dataset.lookId)")


def walk_pages(page, style: str, category: str) -> list[str]:
    """Clicks Next to the last page of suggestions; every page keeps the filters (in its URL and its form) and
    shows at most wardrobe.views.SUGGESTIONS_PER_PAGE cards of them. The look ids of all pages, in order."""
    from wardrobe import views

    seen = []
    while True:
        assert parse_qs(urlparse(page.url).query, keep_blank_values=True).get("style", [""]) == [style]
        expect(page.get_by_test_id("style-filter")).to_have_value(style)
        expect(page.get_by_test_id("category-filter")).to_have_value(category)
        cards = read_cards(page)
        assert 0 < len(cards) <= views.SUGGESTIONS_PER_PAGE
        assert all(card["style"] == style for card in cards) if style else True
        assert all(category in card["categories"] for card in cards) if category else True
        seen += [card["look"] for card in cards]
        following = page.get_by_role("link", name="Next")
        if not following.count():
            return seen
        following.click()
        expect(page.get_by_test_id("page-number")).to_contain_text(f"page {len(seen) // views.SUGGESTIONS_PER_PAGE + 1} of")


def test_search_tabs_return_six_results_for_real_images(catalogue, sample_dir, new_page):
    page = new_page()
    page.goto("/")
    expect(page.get_by_test_id("tab-items")).to_have_attribute("aria-selected", "true")
    screenshot(page, "search")

    # Snapshot -> items: a real street snapshot of a look outside the catalogue.
    page.set_input_files("input[name=image]", str(sample_dir / "0_0_part.jpg"))
    page.get_by_test_id("search-submit").click()
    expect(page.get_by_test_id("result")).to_have_count(6)
    expect(page.get_by_test_id("query-image")).to_be_visible()
    images = page.locator('[data-testid="result"] img')
    for i in range(6):
        expect(images.nth(i)).to_have_js_property("complete", True)
        assert images.nth(i).evaluate("img => img.naturalWidth") > 0, "the result's image loads"
    screenshot(page, "search-items-results")

    # ... with a category filter pushed into the query: every result is of that category.
    page.select_option("select[name=category]", "outerwear")
    page.set_input_files("input[name=image]", str(sample_dir / "0_0_part.jpg"))
    page.get_by_test_id("search-submit").click()
    tags = page.locator('[data-testid="result"] .tag')
    expect(tags.first).to_be_visible()
    assert set(tags.all_inner_texts()) == {"outerwear"}

    # Item -> looks, k adjustable.
    page.get_by_test_id("tab-looks").click()
    expect(page.get_by_test_id("tab-looks")).to_have_attribute("aria-selected", "true")
    page.set_input_files("input[name=image]", str(sample_dir / "8_1_reco.jpg"))
    page.get_by_test_id("search-submit").click()
    expect(page.get_by_test_id("result")).to_have_count(6)
    expect(page.get_by_test_id("query-image")).to_be_visible()
    screenshot(page, "search-looks-results")

    page.fill("input[name=k]", "3")
    page.select_option("select[name=style]", "street/hip-hop")
    page.set_input_files("input[name=image]", str(sample_dir / "8_1_reco.jpg"))
    page.get_by_test_id("search-submit").click()
    expect(page.get_by_test_id("result")).to_have_count(3)
    assert set(page.locator('[data-testid="result"] .tag').all_inner_texts()) == {"street/hip-hop"}


def test_bad_uploads_show_the_error_and_store_nothing(transactional_db, active_version, tmp_path, new_page):
    ensure_taxonomy()
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"this is not an image at all")
    page = new_page()

    page.goto("/search/looks/")
    page.set_input_files("input[name=image]", str(bad))
    with page.expect_response(lambda r: r.url.endswith("/search/looks/") and r.request.method == "POST") as info:
        page.get_by_test_id("search-submit").click()
    assert info.value.status == 400
    expect(page.get_by_test_id("error")).to_contain_text("holiday.jpg")
    expect(page.get_by_test_id("result")).to_have_count(0)
    screenshot(page, "search-error")

    register(page, "careful")
    page.set_input_files("input[name=images]", [str(bad)])
    page.get_by_test_id("upload-submit").click()
    expect(page.get_by_test_id("error")).to_contain_text("holiday.jpg")
    screenshot(page, "wardrobe-error")
    assert not WardrobeItem.objects.exists()
    assert not Descriptor.objects.filter(wardrobe_item__isnull=False).exists()


def test_register_upload_live_status_suggestions_and_filters(catalogue, sample_dir, new_page, monkeypatch):
    page = new_page()
    page.goto("/accounts/register/")
    screenshot(page, "register")
    register(page, "alice")
    screenshot(page, "wardrobe-empty")

    # Two real item photos at once; they appear pending, then turn ready with no reload.
    page.set_input_files("input[name=images]", [str(sample_dir / name) for name in WARDROBE_PHOTOS])
    page.get_by_test_id("upload-submit").click()
    expect(page.get_by_test_id("added")).to_be_visible()
    expect(page.get_by_test_id("wardrobe-item")).to_have_count(2)
    page.evaluate("window.__notReloaded = true")
    screenshot(page, "wardrobe-uploaded")
    statuses = page.get_by_test_id("status")
    for i in range(2):
        expect(statuses.nth(i)).to_have_text("ready", timeout=180_000)
    assert page.evaluate("window.__notReloaded") is True, "the statuses changed without a reload"
    screenshot(page, "wardrobe-ready")
    alice_items = list(WardrobeItem.objects.filter(owner__username="alice").values_list("id", flat=True))
    assert len(alice_items) == 2

    # Suggestions are computed by the worker once the wardrobe is embedded.
    def suggestions_shown():
        page.goto("/suggestions/?style=&category=")
        return page.get_by_test_id("suggestion").count() > 0

    wait_until(suggestions_shown, timeout=180, message="suggestions appear for the new wardrobe", interval=2)
    seen = [read_cards(page)]

    def settled():  # each embedded batch and automatic tag recomputes them: wait for two equal reads
        suggestions_shown()
        seen.append(read_cards(page))
        return seen[-1] == seen[-2]

    wait_until(settled, timeout=120, message="the suggestions settle", interval=2)
    expect(page.get_by_test_id("reason").first).not_to_be_empty()
    screenshot(page, "suggestions", full_page=True)
    cards = seen[-1]
    assert cards
    unfiltered = [card["look"] for card in cards]

    # The style filter changes them: exactly the cards of that style (pick one that some cards lack).
    styles = sorted({card["style"] for card in cards if card["style"] != "no style"})
    style = next((s for s in styles if any(card["style"] != s for card in cards)), styles[0])
    page.select_option("[data-testid=style-filter]", style)
    page.get_by_test_id("apply-filters").click()
    expect(page).to_have_url(re.compile(re.escape(urlencode({"style": style}))))
    filtered = look_ids(page)
    assert filtered
    assert {card["style"] for card in read_cards(page)} == {style}
    assert {Look.objects.get(pk=int(look_id)).style.name for look_id in filtered} == {style}
    assert filtered != unfiltered
    screenshot(page, "suggestions-style-filter", full_page=True)

    # The category filter changes them too: the cards with an item of that category to complete them.
    categories = sorted({c for card in cards for c in card["categories"] if c})
    assert categories, "some suggested items have a category"
    category = next(
        (c for c in categories if any(c not in card["categories"] for card in cards)), categories[0]
    )
    page.select_option("[data-testid=style-filter]", "")
    page.select_option("[data-testid=category-filter]", category)
    page.get_by_test_id("apply-filters").click()
    expect(page).to_have_url(re.compile(re.escape(urlencode({"style": "", "category": category}))))
    by_category = look_ids(page)
    assert by_category
    assert all(category in card["categories"] for card in read_cards(page))
    assert by_category != unfiltered
    screenshot(page, "suggestions-category-filter", full_page=True)

    # Paginated (two cards a page here): Next and Previous keep the filters, the pages together hold every card.
    with monkeypatch.context() as patch:
        patch.setattr("wardrobe.views.SUGGESTIONS_PER_PAGE", 2)
        counts = {s: sum(card["style"] == s for card in cards) for s in styles}
        paged_style = max(styles, key=lambda s: (counts[s], s))
        assert counts[paged_style] >= 3, "a style with more than one page of suggestions"
        page.select_option("[data-testid=style-filter]", paged_style)
        page.select_option("[data-testid=category-filter]", "")
        page.get_by_test_id("apply-filters").click()
        walked = walk_pages(page, style=paged_style, category="")
        assert walked == [card["look"] for card in cards if card["style"] == paged_style]
        screenshot(page, "suggestions-paginated")
        page.get_by_role("link", name="Previous").click()
        expect(page.get_by_test_id("style-filter")).to_have_value(paged_style)
        expect(page.get_by_test_id("page-number")).to_contain_text(f"page {-(-len(walked) // 2) - 1} of")

        page.select_option("[data-testid=style-filter]", "")
        page.select_option("[data-testid=category-filter]", category)
        page.get_by_test_id("apply-filters").click()
        assert walk_pages(page, style="", category=category) == by_category

    # Saved preferences become the default filter.
    page.select_option("[data-testid=style-filter]", style)
    page.select_option("[data-testid=category-filter]", "")
    page.get_by_test_id("save-preferences").click()
    expect(page.get_by_test_id("saved-preferences")).to_contain_text(style)
    page.goto("/suggestions/")
    expect(page.get_by_test_id("style-filter")).to_have_value(style)
    assert look_ids(page) == filtered

    # The catalogue's looks: paginated (5 a page here), like one, see it among the liked ones.
    monkeypatch.setattr("recommender.views.LOOKS_PER_PAGE", 5)
    page.goto("/looks/")
    expect(page.get_by_test_id("look")).to_have_count(5)
    page.get_by_role("link", name="Next").click()
    expect(page.get_by_test_id("look")).to_have_count(Look.objects.count() - 5)
    page.get_by_role("link", name="Previous").click()
    page.get_by_test_id("like").first.click()
    expect(page.get_by_test_id("unlike")).to_have_count(1)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "looks")
    page.check("input[name=liked]")
    expect(page.get_by_test_id("look")).to_have_count(1)
    page.locator('[data-testid="look"] a').first.click()
    expect(page.locator("h1")).to_contain_text("Look")
    expect(page.get_by_test_id("unlike")).to_be_visible()
    screenshot(page, "look-detail")

    # Another user sees none of alice's wardrobe and cannot delete her items.
    other = new_page()
    register(other, "bob")
    expect(other.get_by_test_id("wardrobe-item")).to_have_count(0)
    statuses = other.request.get("/wardrobe/status.json").json()["items"]
    assert not set(statuses) & {str(i) for i in alice_items}
    token = other.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    response = other.request.post(f"/wardrobe/items/{alice_items[0]}/delete/", form={"csrfmiddlewaretoken": token})
    assert response.status == 404
    before = WardrobeItem.objects.get(pk=alice_items[0]).category_id
    response = other.request.post(
        f"/wardrobe/items/{alice_items[0]}/edit/", form={"csrfmiddlewaretoken": token, "category": "dress"}
    )
    assert response.status == 404
    assert WardrobeItem.objects.get(pk=alice_items[0]).category_id == before

    # Alice corrects the category of one of hers, deletes the other; logs out and back in.
    page.goto("/wardrobe/")
    first_id = int(page.get_by_test_id("wardrobe-item").first.get_attribute("data-item-id"))
    with page.expect_navigation():
        page.get_by_test_id("item-category").first.select_option("hat")  # submits on change
    expect(page.get_by_test_id("item-category").first).to_have_value("hat")
    assert WardrobeItem.objects.get(pk=first_id).category.name == "hat"
    page.get_by_test_id("delete").last.click()
    expect(page.get_by_test_id("wardrobe-item")).to_have_count(1)
    assert list(WardrobeItem.objects.filter(owner__username="alice").values_list("id", "category__name")) == [
        (first_id, "hat")
    ]
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    page.goto("/accounts/login/")
    screenshot(page, "login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.stacked button[type=submit]")
    expect(page.get_by_test_id("username")).to_have_text("alice")
