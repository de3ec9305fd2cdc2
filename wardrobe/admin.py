from django.contrib import admin

from recommender.admin import CategoryCorrectionAdmin
from wardrobe.models import LikedLook, Preferences, Suggestion, WardrobeItem


@admin.register(WardrobeItem)
class WardrobeItemAdmin(CategoryCorrectionAdmin):
    list_display = ("id", "owner", "category", "category_source", "category_confidence", "style", "created")
    list_filter = ("category", "category_source", "style")
    readonly_fields = ("category_source", "category_confidence")


@admin.register(LikedLook)
class LikedLookAdmin(admin.ModelAdmin):
    list_display = ("user", "look", "created")


@admin.register(Preferences)
class PreferencesAdmin(admin.ModelAdmin):
    list_display = ("user", "style", "category")


@admin.register(Suggestion)
class SuggestionAdmin(admin.ModelAdmin):
    list_display = ("user", "look", "score", "reason")
    list_filter = ("look__style",)
