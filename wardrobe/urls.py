from django.contrib.auth import views as auth_views
from django.urls import path

from wardrobe import views

urlpatterns = [
    path("accounts/register/", views.register, name="register"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("wardrobe/", views.wardrobe_page, name="wardrobe"),
    path("wardrobe/status.json", views.wardrobe_status, name="wardrobe-status"),
    path("wardrobe/items/<int:item_id>/edit/", views.wardrobe_edit, name="wardrobe-edit"),
    path("wardrobe/items/<int:item_id>/delete/", views.wardrobe_delete, name="wardrobe-delete"),
    path("looks/<int:look_id>/like/", views.like, name="look-like"),
    path("looks/<int:look_id>/unlike/", views.unlike, name="look-unlike"),
    path("suggestions/", views.suggestions_page, name="suggestions"),
    path("suggestions/preferences/", views.save_preferences, name="save-preferences"),
]
