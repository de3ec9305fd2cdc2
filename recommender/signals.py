"""Signals other parts of the platform listen to (Django's own pattern: receivers connect in their AppConfig)."""
from django.dispatch import Signal

# Sent by the worker after a batch of descriptors turned ready; `descriptors` is the list of Descriptor rows.
# Receivers: wardrobe suggestions (recompute for the owners), automatic category tagging.
descriptors_ready = Signal()
