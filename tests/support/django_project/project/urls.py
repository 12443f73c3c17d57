"""URLs of the test project."""

from django.urls import path
from shop import views

urlpatterns = [
    path("emit/", views.emit),
    path("orders/", views.create_order),
    path("hooks/", views.hooks),
]
