from django.apps import AppConfig


class WardrobeConfig(AppConfig):
    name = "wardrobe"
    verbose_name = "Users' wardrobes"

    def ready(self):
        from recommender.signals import active_version_changed, descriptors_ready, wardrobe_items_tagged

        descriptors_ready.connect(recompute_for_owners, dispatch_uid="wardrobe.recompute_for_owners")
        active_version_changed.connect(recompute_for_everyone, dispatch_uid="wardrobe.recompute_for_everyone")
        wardrobe_items_tagged.connect(recompute_for_tagged, dispatch_uid="wardrobe.recompute_for_tagged")


def recompute_for_owners(sender, descriptors, **kwargs):
    """Wardrobe items turned ready under the active version: their owners' suggestions change."""
    _recompute_owners_of({d.wardrobe_item_id for d in descriptors if d.wardrobe_item_id and d.model_version.is_active})


def recompute_for_tagged(sender, wardrobe_item_ids, **kwargs):
    """Wardrobe items got an automatic category or style: reasons and category filters change."""
    _recompute_owners_of(set(wardrobe_item_ids))


def recompute_for_everyone(sender, version, **kwargs):
    """Another model version is active: every user's suggestions are scored anew with its descriptors."""
    from wardrobe.services.wardrobe import schedule_suggestions_for_everyone

    schedule_suggestions_for_everyone()


def _recompute_owners_of(item_ids):
    from wardrobe.models import WardrobeItem
    from wardrobe.services.wardrobe import schedule_suggestions

    if not item_ids:
        return
    for owner_id in sorted(set(WardrobeItem.objects.filter(id__in=item_ids).values_list("owner_id", flat=True))):
        schedule_suggestions(owner_id)
