"""The wardrobe's services, shared by the web pages and the REST API."""
from wardrobe.services.suggestions import get_suggestions
from wardrobe.services.wardrobe import (
    add_wardrobe_items,
    delete_wardrobe_item,
    get_preferences,
    get_wardrobe_item,
    like_look,
    liked_look_ids,
    set_preferences,
    unlike_look,
    update_wardrobe_item,
    wardrobe_item_status,
    wardrobe_items,
    wardrobe_statuses,
)

__all__ = [
    "add_wardrobe_items",
    "delete_wardrobe_item",
    "get_preferences",
    "get_suggestions",
    "get_wardrobe_item",
    "like_look",
    "liked_look_ids",
    "set_preferences",
    "unlike_look",
    "update_wardrobe_item",
    "wardrobe_item_status",
    "wardrobe_items",
    "wardrobe_statuses",
]
