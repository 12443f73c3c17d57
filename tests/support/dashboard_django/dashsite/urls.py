"""The admin (for its login page) and the dashboard under /webhooks/."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/", include("webhooks_emitter.contrib.django.urls")),
]
