"""The REST API under /api/ (DRF): schema at /api/schema/, browsable docs at /api/docs/ (served offline)."""
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("", include("recommender.api.urls")),
    path("", include("wardrobe.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
