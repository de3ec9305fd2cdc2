from django.urls import path

from recommender import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("", views.search_page, name="search"),
    path("search/items/", views.search_items_view, name="search-items"),
    path("search/looks/", views.search_looks_view, name="search-looks"),
    path("looks/", views.looks_page, name="looks"),
    path("looks/<int:look_id>/", views.look_page, name="look"),
    path("items/<int:item_id>/category/", views.item_category, name="item-category"),
]
