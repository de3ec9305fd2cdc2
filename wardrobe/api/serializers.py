"""Response shapes of the wardrobe's API (requests are read by the views: several files share one field)."""
from rest_framework import serializers

from recommender.api.serializers import NameChoiceField, absolute_url
from recommender.models import Category, Style


def _name(row):
    return row.name if row is not None else None


class WardrobeItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.SerializerMethodField()
    category = serializers.SerializerMethodField()
    style = serializers.SerializerMethodField()
    colour = serializers.CharField()
    image_url = serializers.SerializerMethodField()
    created = serializers.DateTimeField()

    def get_status(self, item) -> str:
        status = getattr(item, "status", None)
        if status is None and "statuses" in self.context:
            status = self.context["statuses"].get(item.id)
        if status is None:
            from wardrobe.services import wardrobe_item_status

            status = wardrobe_item_status(item)
        return status

    def get_category(self, item) -> str | None:
        return _name(item.category)

    def get_style(self, item) -> str | None:
        return _name(item.style)

    def get_image_url(self, item) -> str | None:
        return absolute_url(self.context.get("request"), item.image)


class WardrobeItemsSerializer(serializers.Serializer):
    results = WardrobeItemSerializer(many=True)


class WardrobeUploadSerializer(serializers.Serializer):
    """POST body (multipart): one or several `image` parts, and optionally a category and a style for all."""

    image = serializers.ListField(child=serializers.FileField(allow_empty_file=True), min_length=1)
    category = NameChoiceField(Category)
    style = NameChoiceField(Style)


class WardrobeItemUpdateSerializer(serializers.Serializer):
    category = NameChoiceField(Category)
    style = NameChoiceField(Style)


class AcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()


class LikeSerializer(serializers.Serializer):
    look_id = serializers.IntegerField()


class LikedLookSerializer(serializers.Serializer):
    look_id = serializers.IntegerField(source="look.id")
    style = serializers.SerializerMethodField()
    snapshot_url = serializers.SerializerMethodField()
    liked = serializers.DateTimeField(source="created")

    def get_style(self, like) -> str | None:
        return _name(like.look.style)

    def get_snapshot_url(self, like) -> str | None:
        snapshot = next(iter(like.look.snapshots.all()), None)
        return absolute_url(self.context.get("request"), snapshot.image) if snapshot else None


class LikedLooksSerializer(serializers.Serializer):
    results = LikedLookSerializer(many=True)


class YourItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    category = serializers.SerializerMethodField()
    colour = serializers.CharField()
    image_url = serializers.SerializerMethodField()

    def get_category(self, item) -> str | None:
        return _name(item.category)

    def get_image_url(self, item) -> str | None:
        return absolute_url(self.context.get("request"), item.image)


class CompleteWithSerializer(serializers.Serializer):
    item_id = serializers.IntegerField(source="item.id")
    category = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()
    score = serializers.FloatField()
    linked = serializers.BooleanField(help_text="An expert linked this item to the look (else: a nearest item).")

    def get_category(self, link) -> str | None:
        return _name(link.item.category)

    def get_image_url(self, link) -> str | None:
        return absolute_url(self.context.get("request"), link.item.image)


class SuggestionSerializer(serializers.Serializer):
    look_id = serializers.IntegerField(source="look.id")
    style = serializers.SerializerMethodField()
    snapshot_url = serializers.SerializerMethodField()
    your_items = YourItemSerializer(many=True, source="your_items.all")
    complete_with = CompleteWithSerializer(
        many=True, source="suggested_items.all",
        help_text="Catalogue items that complete the look as an outfit: at most two of a category, none of a "
        "category your fitting items cover (unless nothing else fits), top to bottom (outerwear, top, dress, "
        "bottom, shoes, bag, hat, accessory).",
    )
    score = serializers.FloatField()
    reason = serializers.CharField()
    computed = serializers.DateTimeField()

    def get_style(self, suggestion) -> str | None:
        return _name(suggestion.look.style)

    def get_snapshot_url(self, suggestion) -> str | None:
        return absolute_url(self.context.get("request"), suggestion.snapshot.image if suggestion.snapshot else None)


class SuggestionsSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Suggestions matching the filters, over all pages.")
    next = serializers.URLField(allow_null=True, help_text="The next page (filters kept); null on the last.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page; null on the first.")
    style = serializers.CharField(help_text="The style filter applied ('' for none).")
    category = serializers.CharField(help_text="The category filter applied ('' for none).")
    results = SuggestionSerializer(many=True)
