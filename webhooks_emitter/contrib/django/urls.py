"""The operators' dashboard for Django: staff users only (others go to the admin login).

    # urls.py
    urlpatterns = [
        path("admin/", admin.site.urls),
        path("webhooks/", include("webhooks_emitter.contrib.django.urls")),
    ]

It needs ``django.contrib.admin`` (its login page), ``django.contrib.auth`` and
``django.contrib.sessions``; Django's CSRF protection covers every form.
"""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

from django.urls import path

from . import dashboard_views

app_name = "webhooks_emitter_dashboard"

urlpatterns = [
    path("", dashboard_views.emitters, name="emitters"),
    path("emitter", dashboard_views.emitter, name="emitter"),
]
