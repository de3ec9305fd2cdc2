"""What a user owns (past purchases, uploaded as photos) and which catalogue looks they liked."""
from django.conf import settings
from django.db import models


class WardrobeItem(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="wardrobe_items")
    image = models.ImageField(upload_to="wardrobe/")
    sha256 = models.CharField(max_length=64)
    category = models.ForeignKey("recommender.Category", null=True, blank=True, on_delete=models.SET_NULL)
    style = models.ForeignKey("recommender.Style", null=True, blank=True, on_delete=models.SET_NULL)
    colour = models.CharField(
        max_length=32, blank=True,
        help_text="The garment's colour words from its own pixels (ml.tagging.colour): 'navy' or 'cream and navy'.",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.owner}'s item {self.pk}"


class LikedLook(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="liked_looks")
    look = models.ForeignKey("recommender.Look", on_delete=models.CASCADE, related_name="likes")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "look"], name="like_once")]


class Preferences(models.Model):
    """A user's saved filters for suggestions (the default when a page or API call passes none)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences")
    style = models.ForeignKey("recommender.Style", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    category = models.ForeignKey(
        "recommender.Category", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "preferences"

    def __str__(self):
        return f"{self.user}'s preferences"


class Suggestion(models.Model):
    """One stored outfit suggestion: a catalogue look, the user's items that fit it, catalogue items that
    complete it (ordered), a score and the reason shown on its card. Recomputed by wardrobe.tasks."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="suggestions")
    look = models.ForeignKey("recommender.Look", on_delete=models.CASCADE, related_name="+")
    snapshot = models.ForeignKey(
        "recommender.Snapshot", null=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The look's snapshot closest to the user's items, shown on the card.",
    )
    score = models.FloatField()
    your_items = models.ManyToManyField(WardrobeItem, related_name="suggestions")
    complete_with = models.ManyToManyField("recommender.Item", through="SuggestedItem", related_name="+")
    reason = models.TextField(blank=True)
    computed = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-score", "id"]
        constraints = [models.UniqueConstraint(fields=["user", "look"], name="suggest_look_once")]

    def __str__(self):
        return f"{self.user}: {self.look} ({self.score:.3f})"

    def complete_with_items(self):
        """The catalogue items that complete the look, in their order."""
        return [link.item for link in self.suggested_items.all()]


class SuggestedItem(models.Model):
    suggestion = models.ForeignKey(Suggestion, on_delete=models.CASCADE, related_name="suggested_items")
    item = models.ForeignKey("recommender.Item", on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField()
    score = models.FloatField(help_text="Cosine similarity of the item to the look's snapshot.")
    linked = models.BooleanField(help_text="An expert linked this item to the look (else: a nearest item).")

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["suggestion", "item"], name="suggested_item_once")]
