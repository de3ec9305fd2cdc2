from django.apps import AppConfig


class WardrobeConfig(AppConfig):
    name = "wardrobe"
    verbose_name = "Users' wardrobes"
