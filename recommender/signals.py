"""Signals other parts of the platform listen to (Django's own pattern: receivers connect in their AppConfig)."""
from django.dispatch import Signal

# Sent by the worker after a batch of descriptors turned ready; `descriptors` is the list of Descriptor rows.
# Receivers: wardrobe suggestions (recompute for the owners), automatic category tagging.
descriptors_ready = Signal()

# Sent (after commit) when another model version became the active one; `version` is the ModelVersion.
# Receivers: wardrobe suggestions (every user's scores change with the descriptors).
active_version_changed = Signal()

# Sent after automatic tagging gave wardrobe items a category or style; `wardrobe_item_ids` lists them.
# Receivers: wardrobe suggestions (their reason texts and category filters use it).
wardrobe_items_tagged = Signal()
