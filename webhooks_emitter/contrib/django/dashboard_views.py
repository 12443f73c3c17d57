"""The operators' dashboard as Django views: staff users only, Django's CSRF on every form.

Mounted by :mod:`webhooks_emitter.contrib.django.urls`; shows the store of
``settings.WEBHOOKS_EMITTER`` (the default instance's).
"""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found, misc, untyped-decorator"

from __future__ import annotations

from typing import Any, Optional

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

import webhooks_emitter

from ..._dashboard import HEADERS, Dashboard, Page, Response
from ..._hub import WebhooksEmitter
from ...stores import Store

__all__ = ["emitter", "emitters"]


def _store() -> Store:
    return webhooks_emitter.default.store


def _instance() -> Optional[WebhooksEmitter]:
    return webhooks_emitter.default


_dashboard = Dashboard(_store, _instance)


def _send(response: Response) -> HttpResponse:
    answer = HttpResponse(response.body, status=response.status, content_type=response.content_type)
    for header, value in HEADERS:
        answer[header] = value
    if response.location is not None:
        answer["Location"] = response.location
    return answer


def _serve(request: HttpRequest, route: str, base: str) -> HttpResponse:
    page = Page(base=base, where="", csrf_name="csrfmiddlewaretoken", csrf_token=get_token(request))
    query = {k: v for k, v in request.GET.items()}
    if request.method == "POST":
        form = {k: v for k, v in request.POST.items()}
        return _send(_dashboard.act(route, query, form, page))
    if request.method not in ("GET", "HEAD"):
        answer = HttpResponse("405 Method Not Allowed\n", status=405, content_type="text/plain")
        answer["Allow"] = "GET, HEAD, POST"
        return answer
    return _send(_dashboard.page(route, query, page))


@never_cache
@staff_member_required
@csrf_protect
def emitters(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The emitters page (its URL is the dashboard's base)."""
    return _serve(request, "", request.path)


@never_cache
@staff_member_required
@csrf_protect
def emitter(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """One emitter's page (``?id=EMITTER_ID``) and its forms."""
    base = request.path[: -len("emitter")] if request.path.endswith("emitter") else request.path
    return _serve(request, "emitter", base)
