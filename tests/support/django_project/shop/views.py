"""Views: one that emits at once, one that emits on commit, one that receives webhooks."""

from __future__ import annotations

import json
import threading

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

import webhooks_emitter
from shop.models import Order
from webhooks_emitter.contrib.django import emit_on_commit, webhook_view

#: Bodies the receiver view accepted (a live server runs it in another thread).
RECEIVED: list[bytes] = []
RECEIVED_LOCK = threading.Lock()


class Rollback(Exception):
    """Raised inside the atomic block to roll it back."""


@require_POST
def emit(request: HttpRequest) -> JsonResponse:
    """Emit the JSON body as ``order.created`` at once (CSRF-protected, as views are)."""
    request_id = webhooks_emitter.emit("order.created", json.loads(request.body))
    return JsonResponse({"request_id": request_id})


@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    """Create an Order and emit ``order.created`` on commit; ``{"fail": true}`` rolls back."""
    data = json.loads(request.body)
    request_id = None
    try:
        with transaction.atomic():
            order = Order.objects.create(item=data["item"])
            request_id = emit_on_commit("order.created", {"order": order.pk, "item": order.item})
            if data.get("fail"):
                raise Rollback
    except Rollback:
        return JsonResponse({"request_id": request_id, "rolled_back": True})
    return JsonResponse({"request_id": request_id, "rolled_back": False})


@webhook_view("supersecret")
def hooks(request: HttpRequest) -> HttpResponse:
    """Receive a webhook signed with 'supersecret'."""
    with RECEIVED_LOCK:
        RECEIVED.append(request.body)
    return HttpResponse(status=204)
