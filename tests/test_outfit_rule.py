"""The one rule behind "complete it with" (wardrobe.services.suggestions.outfit), on hand-made candidates: the
category caps, the categories the user's fitting items cover, the fallback when nothing else fits, the order
of the card, the preference for expert-linked items."""
from collections import Counter

from recommender.taxonomy import CATEGORIES
from wardrobe.services.suggestions import (
    COMPLETE_WITH,
    OUTFIT_ORDER,
    PER_CATEGORY,
    Candidate,
    covered_categories,
    outfit,
    outfit_position,
)


def candidates(*specs):
    """(category, score[, linked]) each -> Candidates with ids 1, 2, ..."""
    return [Candidate(i, spec[0], spec[1], spec[2] if len(spec) > 2 else False) for i, spec in enumerate(specs, 1)]


def test_every_category_of_the_taxonomy_has_a_place_on_the_card():
    assert set(OUTFIT_ORDER) == set(CATEGORIES)
    assert OUTFIT_ORDER.index("outerwear") < OUTFIT_ORDER.index("top") < OUTFIT_ORDER.index("bottom")
    assert OUTFIT_ORDER.index("bottom") < OUTFIT_ORDER.index("shoes") < OUTFIT_ORDER.index("bag")
    assert OUTFIT_ORDER.index("bag") < OUTFIT_ORDER.index("hat") < OUTFIT_ORDER.index("accessory")
    assert outfit_position("accessory") < outfit_position("scarf") < outfit_position(None)


def test_five_pairs_of_shoes_become_an_outfit_of_several_categories():
    pool = candidates(
        ("shoes", 0.9), ("shoes", 0.89), ("shoes", 0.88), ("shoes", 0.87), ("shoes", 0.86),
        ("bag", 0.5), ("top", 0.4), ("hat", 0.3), ("top", 0.35), ("top", 0.2),
    )
    chosen = outfit(pool)
    counts = Counter(c.category for c in chosen)
    assert max(counts.values()) <= PER_CATEGORY == 2
    assert counts == {"shoes": 2, "top": 2, "bag": 1, "hat": 1}
    assert [c.category for c in chosen] == ["top", "top", "shoes", "shoes", "bag", "hat"]
    assert [c.item_id for c in chosen if c.category == "shoes"] == [1, 2]  # the closest ones
    assert [c.item_id for c in chosen if c.category == "top"] == [7, 9]


def test_the_limit_takes_the_best_of_every_category_before_any_second():
    pool = candidates(*[(category, 0.9 - 0.01 * i) for i, category in enumerate(CATEGORIES * 2)])
    chosen = outfit(pool, limit=COMPLETE_WITH)
    assert len(chosen) == COMPLETE_WITH == len(CATEGORIES)
    assert Counter(c.category for c in chosen) == Counter(CATEGORIES)
    assert [c.category for c in chosen] == list(OUTFIT_ORDER)
    assert len(outfit(pool, limit=3)) == 3


def test_no_item_of_a_category_the_users_items_cover_unless_nothing_else_fits():
    pool = candidates(("shoes", 0.9, True), ("top", 0.8), ("bag", 0.3), ("shoes", 0.7))
    assert {c.category for c in outfit(pool, covered={"shoes"})} == {"top", "bag"}
    assert {c.category for c in outfit(pool, covered={"shoes", "top"})} == {"bag"}
    only_covered = outfit(candidates(("shoes", 0.9), ("shoes", 0.8), ("shoes", 0.7)), covered={"shoes"})
    assert [c.item_id for c in only_covered] == [1, 2], "nothing else fits: covered ones, still capped"
    assert outfit([], covered={"shoes"}) == []


def test_a_dress_covers_a_top_and_a_bottom_and_a_top_with_a_bottom_covers_a_dress():
    assert covered_categories(["dress"]) == {"dress", "top", "bottom"}
    assert covered_categories(["top", "bottom", None]) == {"top", "bottom", "dress"}
    assert covered_categories(["top"]) == {"top"}


def test_expert_linked_items_come_before_closer_nearest_ones():
    pool = candidates(("shoes", 0.95), ("shoes", 0.5, True), ("shoes", 0.9), ("bag", 0.2, True))
    chosen = outfit(pool)
    assert [c.item_id for c in chosen] == [2, 1, 4]


def test_uncategorised_items_count_as_one_category_and_go_last():
    pool = candidates((None, 0.99), (None, 0.98), (None, 0.97), ("hat", 0.1))
    assert [c.item_id for c in outfit(pool)] == [4, 1, 2]
