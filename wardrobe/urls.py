from django.urls import path

from wardrobe import views

urlpatterns = [
    path("wardrobe/", views.wardrobe_page, name="wardrobe"),
    path("wardrobe/status.json", views.wardrobe_status, name="wardrobe-status"),
    path("wardrobe/items/<int:item_id>/edit/", views.wardrobe_edit, name="wardrobe-edit"),
    path("wardrobe/items/<int:item_id>/delete/", views.wardrobe_delete, name="wardrobe-delete"),
    path("looks/<int:look_id>/like/", views.like, name="look-like"),
    path("looks/<int:look_id>/unlike/", views.unlike, name="look-unlike"),
    path("suggestions/", views.suggestions_page, name="suggestions"),
    path("suggestions/preferences/", views.save_preferences, name="save-preferences"),
]
