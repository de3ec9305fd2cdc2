from django.urls import path

from wardrobe.api import views

urlpatterns = [
    path("wardrobe/items/", views.WardrobeItemsView.as_view(), name="api-wardrobe-items"),
    path("wardrobe/items/<int:item_id>/", views.WardrobeItemView.as_view(), name="api-wardrobe-item"),
    path("wardrobe/liked-looks/", views.LikedLooksView.as_view(), name="api-liked-looks"),
    path("wardrobe/liked-looks/<int:look_id>/", views.LikedLookView.as_view(), name="api-liked-look"),
    path("suggestions/", views.SuggestionsView.as_view(), name="api-suggestions"),
]
