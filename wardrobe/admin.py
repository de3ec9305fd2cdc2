from django.contrib import admin

from wardrobe.models import LikedLook, Preferences, Suggestion, WardrobeItem


@admin.register(WardrobeItem)
class WardrobeItemAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "category", "style", "created")
    list_filter = ("category", "style")


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
