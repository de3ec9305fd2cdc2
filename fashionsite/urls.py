from django.contrib import admin
from django.urls import include, path

from recommender.views import catalogue_photo
from wardrobe.views import wardrobe_photo

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("fashionsite.api_urls")),
    # media (MEDIA_URL): catalogue photos to anyone, a wardrobe photo to its owner only (fashionsite.media)
    path("media/catalogue/<path:name>", catalogue_photo, name="catalogue-photo"),
    path("media/wardrobe/<path:name>", wardrobe_photo, name="wardrobe-photo"),
    path("", include("accounts.urls")),
    path("", include("recommender.urls")),
    path("", include("wardrobe.urls")),
]

# The site's own error pages; JSON in the one error shape under /api/ (fashionsite.errors).
handler400 = "fashionsite.errors.bad_request"
handler403 = "fashionsite.errors.permission_denied"
handler404 = "fashionsite.errors.page_not_found"
handler500 = "fashionsite.errors.server_error"
