from django.urls import path

from recommender import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
]
