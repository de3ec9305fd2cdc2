"""What a user owns (past purchases, uploaded as photos) and which catalogue looks they liked."""
from django.conf import settings
from django.db import models


class WardrobeItem(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="wardrobe_items")
    image = models.ImageField(upload_to="wardrobe/")
    sha256 = models.CharField(max_length=64)
    category = models.ForeignKey("recommender.Category", null=True, blank=True, on_delete=models.SET_NULL)
    style = models.ForeignKey("recommender.Style", null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.owner}'s item {self.pk}"


class LikedLook(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="liked_looks")
    look = models.ForeignKey("recommender.Look", on_delete=models.CASCADE, related_name="likes")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "look"], name="like_once")]
