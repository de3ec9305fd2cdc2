from django.urls import path

from recommender.api import views

urlpatterns = [
    path("auth/register/", views.RegisterView.as_view(), name="api-register"),
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("search/items/", views.ItemSearchView.as_view(), name="api-search-items"),
    path("search/looks/", views.LookSearchView.as_view(), name="api-search-looks"),
    path("admin/reembed/", views.ReembedView.as_view(), name="api-reembed"),
    path("admin/jobs/<int:job_id>/", views.JobView.as_view(), name="api-job"),
]
