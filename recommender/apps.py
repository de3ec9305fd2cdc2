import os
import threading

from django.apps import AppConfig


class RecommenderConfig(AppConfig):
    name = "recommender"
    verbose_name = "Catalogue and recommendations"

    def ready(self):
        from django.db.models.signals import pre_delete

        from recommender.models import ModelVersion
        from recommender.services.tagging import on_descriptors_ready
        from recommender.services.versions import protect_active_version
        from recommender.signals import descriptors_ready

        # deleting a model version cannot break search (the active one is protected)
        pre_delete.connect(protect_active_version, sender=ModelVersion, dispatch_uid="recommender.protect_active")

        # automatic category and style for images that turned ready without one (issue 4)
        descriptors_ready.connect(on_descriptors_ready, dispatch_uid="recommender.tagging")

        # The web server (started with FASHIONSITE_WARM_MODEL=1 by the launcher) loads and warms the active
        # model once at start, so the first search does not pay for it. Never at import in other processes:
        # TensorFlow must not be loaded before a fork.
        if os.environ.get("FASHIONSITE_WARM_MODEL") == "1":
            threading.Thread(target=warm_up_active_model, name="warm-model", daemon=True).start()


def warm_up_active_model():
    from recommender.embedders import get_embedder
    from recommender.services.versions import active_version

    try:
        get_embedder(active_version())  # loads it and runs it once (Embedder.warm_up)
    except Exception:  # not migrated yet: the first search loads it
        pass
