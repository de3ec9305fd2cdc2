from django.contrib import admin
from django.utils.html import format_html

from django.contrib import messages

from recommender.models import (
    Category, CategorySource, Descriptor, Item, Look, ModelVersion, ReembedJob, Snapshot, Style, TrainingJob,
)
from recommender.services.reembedding import ReembeddingInProgress, start_reembedding


def thumbnail(image_field):
    return format_html('<img src="{}" style="height:64px">', image_field.url) if image_field else ""


class SnapshotInline(admin.TabularInline):
    model = Snapshot
    fields = ("preview", "original_name", "sha256")
    readonly_fields = fields
    extra = 0

    def preview(self, snapshot):
        return thumbnail(snapshot.image)


@admin.register(Look)
class LookAdmin(admin.ModelAdmin):
    list_display = ("key", "style", "created")
    list_filter = ("style",)
    search_fields = ("key",)
    inlines = [SnapshotInline]


class CategoryCorrectionAdmin(admin.ModelAdmin):
    """An admin's category change (list-editable or in the form) is kept as a label (source "admin") the
    category tagger learns from the next time it is trained."""

    def save_model(self, request, obj, form, change):
        if "category" in form.changed_data:
            obj.set_category_label(obj.category, CategorySource.ADMIN)
        super().save_model(request, obj, form, change)


@admin.register(Item)
class ItemAdmin(CategoryCorrectionAdmin):
    list_display = ("id", "preview", "original_name", "category", "category_source", "category_confidence")
    list_filter = ("category", "category_source")
    list_editable = ("category",)
    search_fields = ("original_name", "sha256")
    readonly_fields = ("category_source", "category_confidence")

    def preview(self, item):
        return thumbnail(item.image)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "spec", "dim", "is_active", "created")
    actions = ["reembed"]

    @admin.action(description="Re-embed the whole database with this version, then switch to it")
    def reembed(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one model version.", messages.ERROR)
            return
        try:
            job = start_reembedding(queryset.get())
        except ReembeddingInProgress as error:
            self.message_user(request, f"Not started: {error}.", messages.ERROR)
            return
        self.message_user(request, f"Started: {job}. Progress shows under Re-embed jobs.")

    def has_delete_permission(self, request, obj=None):
        # the active version serves every search: activate another one first
        return super().has_delete_permission(request, obj) and not (obj is not None and obj.is_active)

    def delete_queryset(self, request, queryset):
        active = queryset.filter(is_active=True)
        if active.exists():
            self.message_user(request, f"Kept {active.get()}: it is the active version.", messages.WARNING)
        super().delete_queryset(request, queryset.filter(is_active=False))


@admin.register(ReembedJob)
class ReembedJobAdmin(admin.ModelAdmin):
    list_display = ("id", "model_version", "state", "done", "failed", "total", "created", "finished")
    readonly_fields = list_display + ("error",)


@admin.register(Descriptor)
class DescriptorAdmin(admin.ModelAdmin):
    list_display = ("id", "model_version", "snapshot", "item", "wardrobe_item", "status", "updated")
    list_filter = ("model_version", "status")
    readonly_fields = ("embedding",)


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ("id", "state", "message", "model_version", "created", "finished")
    readonly_fields = list_display


admin.site.register(Style)
admin.site.register(Category)
