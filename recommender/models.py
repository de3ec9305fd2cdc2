"""The catalogue (looks, snapshots, items), the model versions and the image descriptors.

A look is one post: 1 to 3 street snapshots and the items experts linked to it. Items are deduplicated by the
SHA-256 of their image bytes, so one item can be linked to many looks. Every image has one Descriptor row per
model version: it carries the embedding status (pending / ready / failed with the error) and, when ready, the
vector. Vector sizes differ between model versions, so the column is an untyped pgvector `vector`; each version
gets its own partial HNSW indexes on a cast to its size (see recommender.services.versions).
"""
from django.db import models
from django.db.models import Q
from pgvector.django import VectorField


class Style(models.Model):
    name = models.CharField(max_length=64, unique=True)

    def __str__(self):
        return self.name


class Category(models.Model):
    name = models.CharField(max_length=64, unique=True)

    class Meta:
        verbose_name_plural = "categories"

    def __str__(self):
        return self.name


class CategorySource(models.TextChoices):
    """Who set an item's category. The hand, user and admin ones are labels the category tagger is trained
    on (`manage.py train_tagger`); an automatic tag is not (a model never learns from its own guesses)."""

    NONE = "", "none"
    HAND = "hand", "hand label (imported)"
    AUTO = "auto", "automatic tag"
    USER = "user", "confirmed or changed by its owner"
    ADMIN = "admin", "corrected by an admin"


# The sources whose categories are labels, corrections first (the order training reads them in).
LABEL_SOURCES = (CategorySource.ADMIN, CategorySource.USER, CategorySource.HAND)


class CategorisedImage(models.Model):
    """What an Item and a WardrobeItem share about their `category` (a ForeignKey each defines): who set it,
    and for an automatic tag the tagger's confidence (its probability of that category)."""

    category_source = models.CharField(max_length=8, choices=CategorySource.choices, blank=True, default="")
    category_confidence = models.FloatField(
        null=True, blank=True, help_text="The automatic tagger's probability of this category (0..1)."
    )

    class Meta:
        abstract = True

    @property
    def category_is_suggestion(self) -> bool:
        """An automatic tag the tagger is unsure of: shown as a suggestion to confirm or change."""
        from recommender.taxonomy import CATEGORY_SUGGESTION_THRESHOLD

        return (self.category_id is not None and self.category_source == CategorySource.AUTO
                and (self.category_confidence or 0.0) < CATEGORY_SUGGESTION_THRESHOLD)

    def set_category_label(self, category, source: str) -> None:
        """A person's category (None clears it): kept as a label, without a confidence."""
        self.category = category
        self.category_source = source if category is not None else CategorySource.NONE
        self.category_confidence = None


class Look(models.Model):
    key = models.CharField(max_length=64, unique=True, help_text="The post's id in its source, e.g. '23'.")
    style = models.ForeignKey(Style, null=True, blank=True, on_delete=models.SET_NULL, related_name="looks")
    items = models.ManyToManyField("Item", through="LookItem", related_name="looks")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"look {self.key}"


class Snapshot(models.Model):
    look = models.ForeignKey(Look, on_delete=models.CASCADE, related_name="snapshots")
    image = models.ImageField(upload_to="catalogue/snapshots/")
    sha256 = models.CharField(max_length=64)
    original_name = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["look", "sha256"], name="snapshot_unique_per_look")]

    def __str__(self):
        return self.original_name or f"snapshot {self.pk}"


class Item(CategorisedImage):
    image = models.ImageField(upload_to="catalogue/items/")
    sha256 = models.CharField(max_length=64, unique=True)
    original_name = models.CharField(max_length=255, blank=True)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="items")

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.original_name or f"item {self.pk}"


class LookItem(models.Model):
    """An expert's link: this item goes with this look."""

    look = models.ForeignKey(Look, on_delete=models.CASCADE)
    item = models.ForeignKey(Item, on_delete=models.CASCADE)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["look", "item"], name="look_item_unique")]


class ModelVersion(models.Model):
    """An embedding model the platform can serve. Exactly one is active: queries use only its descriptors."""

    name = models.CharField(max_length=128, unique=True)
    spec = models.CharField(
        max_length=512, help_text="What ml.embedding.load_embedder loads: 'untrained-lite0' or a model directory."
    )
    dim = models.PositiveIntegerField()
    is_active = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    # The item IVFFlat index (services.versions): queries probe a share of its lists; the reconciler retrains
    # it when the ready items outgrow the rows its lists were trained on.
    item_index_lists = models.PositiveIntegerField(
        default=32, help_text="Lists of the item index (while it is rebuilt: the larger of old and new).")
    item_index_rows = models.PositiveIntegerField(
        default=0, help_text="Ready item descriptors the item index's lists were trained on.")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_version")
        ]

    def __str__(self):
        return self.name


class DescriptorQuerySet(models.QuerySet):
    def for_active_version(self):
        return self.filter(model_version__is_active=True)


class Descriptor(models.Model):
    """One image's embedding under one model version, and the state of computing it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="descriptors")
    snapshot = models.ForeignKey(Snapshot, null=True, blank=True, on_delete=models.CASCADE, related_name="descriptors")
    item = models.ForeignKey(Item, null=True, blank=True, on_delete=models.CASCADE, related_name="descriptors")
    wardrobe_item = models.ForeignKey(
        "wardrobe.WardrobeItem", null=True, blank=True, on_delete=models.CASCADE, related_name="descriptors"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    embedding = VectorField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)
    # The queue's bookkeeping (recommender.services.embedding): when the row was last sent to the workers (None:
    # not sent, e.g. the broker was down; the reconciler sends it), and how many times a worker started on it
    # (bounded: an image that kills its worker, or fails, again and again is given up as failed).
    queued_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Tagging after embedding (recommender.services.tagging): when a tagging task for this image was sent and
    # has not finished (None: none outstanding), and how many were sent. A task lost with Redis or with a worker
    # that died on it is sent again by the reconciler, a bounded number of times, so no upload stays untagged
    # for good and no image that kills the tagger loops.
    tagging_sent_at = models.DateTimeField(null=True, blank=True)
    tagging_attempts = models.PositiveSmallIntegerField(default=0)

    objects = DescriptorQuerySet.as_manager()

    IMAGE_FIELDS = ("snapshot", "item", "wardrobe_item")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(snapshot__isnull=False, item__isnull=True, wardrobe_item__isnull=True)
                    | Q(snapshot__isnull=True, item__isnull=False, wardrobe_item__isnull=True)
                    | Q(snapshot__isnull=True, item__isnull=True, wardrobe_item__isnull=False)
                ),
                name="descriptor_describes_one_image",
            ),
            models.UniqueConstraint(fields=["model_version", "snapshot"], name="descriptor_unique_snapshot"),
            models.UniqueConstraint(fields=["model_version", "item"], name="descriptor_unique_item"),
            models.UniqueConstraint(fields=["model_version", "wardrobe_item"], name="descriptor_unique_wardrobe"),
        ]
        indexes = [
            # the reconciler's scan of unfinished rows: small once the catalogue is embedded
            models.Index(
                fields=["model_version", "queued_at"], name="descriptor_unfinished",
                condition=~Q(status="ready"),
            ),
            # the reconciler's scan of outstanding tagging: empty whenever tagging keeps up
            models.Index(
                fields=["tagging_sent_at"], name="descriptor_tagging_outstanding",
                condition=Q(tagging_sent_at__isnull=False),
            ),
        ]

    @property
    def image_owner(self):
        """The Snapshot, Item or WardrobeItem this descriptor describes."""
        return self.snapshot or self.item or self.wardrobe_item

    def __str__(self):
        return f"{self.model_version} / {self.image_owner}: {self.status}"


class ReembedJob(models.Model):
    """Re-embedding the whole database with one model version; the version becomes active only when every
    image has its new descriptor (until then queries keep using the old version)."""

    class State(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="reembed_jobs")
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING, db_index=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            # two re-embeddings at once would race to switch the active version
            models.UniqueConstraint(fields=["state"], condition=Q(state="running"), name="one_running_reembedding")
        ]

    def __str__(self):
        return f"re-embed with {self.model_version}: {self.state} ({self.done}/{self.total})"


class TrainingJob(models.Model):
    """Training a CGD model on the catalogue in the background (first start), then re-embedding with it."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        REEMBEDDING = "re-embedding"
        DONE = "done"
        FAILED = "failed"

    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    message = models.TextField(blank=True, help_text="The trainer's latest progress line, or the error.")
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    # when its task was last sent to the training worker (None: not sent yet; the reconciler sends it)
    queued_at = models.DateTimeField(null=True, blank=True)
    # tries started (a worker that dies mid-training costs one; services.training.MAX_TRAINING_ATTEMPTS in all)
    attempts = models.PositiveSmallIntegerField(default=0)
    # refreshed while a worker trains it: a running job whose heartbeat stopped lost its worker
    heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"training job {self.pk}: {self.state}"
