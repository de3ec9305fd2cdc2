from django.contrib import admin

from wardrobe.models import LikedLook, WardrobeItem


@admin.register(WardrobeItem)
class WardrobeItemAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "category", "style", "created")
    list_filter = ("category", "style")


@admin.register(LikedLook)
class LikedLookAdmin(admin.ModelAdmin):
    list_display = ("user", "look", "created")
