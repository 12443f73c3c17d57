"""``webhook_view``: a decorator for views that receive webhooks."""

# Django ships no type information (django-stubs is not required).
# mypy: disable-error-code="import-untyped, import-not-found"

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable, TypeVar, Union

from django.http import HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from ... import signing
from .. import ReceiverCheck, SecretSource

__all__ = ["webhook_view"]

F = TypeVar("F", bound=Callable[..., Any])


def webhook_view(
    secret: SecretSource,
    scheme: Union[signing.Scheme, str] = signing.WEBHOOKS_EMITTER,
    tolerance: float = 300,
    *,
    header_identifier: str = "Webhooks",
) -> Callable[[F], F]:
    """Decorate a view that receives webhooks: CSRF-exempt (the signature authenticates
    the sender), POST only (405 otherwise), and 401 without calling the view when the raw
    body's signature does not hold::

        @webhook_view(settings.BILLING_WEBHOOK_SECRET)
        def billing_hooks(request):
            event = request.headers["X-Webhooks-Event"]
            ...
            return HttpResponse(status=204)

    Args:
        secret: the secret (or a list, newest first, while rotating), or a callable
            returning it, called at each request.
        scheme: a :mod:`webhooks_emitter.signing` scheme, or its name.
        tolerance: for timestamped schemes, the most seconds the timestamp may be off.
        header_identifier: the ``<identifier>`` of ``X-<identifier>-*`` headers.

    Raises:
        TypeError, ValueError: a bad argument (at decoration time).
    """
    check = ReceiverCheck(secret, scheme, tolerance, header_identifier)

    def refuse(request: Any) -> Any:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        why = check.failure(request.body, request.headers)
        if why is not None:
            return HttpResponse(
                f"invalid webhook signature: {why}\n", status=401, content_type="text/plain"
            )
        return None

    def decorate(view: F) -> F:
        if asyncio.iscoroutinefunction(view):

            @functools.wraps(view)
            async def checked_async(request: Any, *args: Any, **kwargs: Any) -> Any:
                refused = refuse(request)
                if refused is not None:
                    return refused
                return await view(request, *args, **kwargs)

            return csrf_exempt(checked_async)  # type: ignore[no-any-return]

        @functools.wraps(view)
        def checked(request: Any, *args: Any, **kwargs: Any) -> Any:
            refused = refuse(request)
            if refused is not None:
                return refused
            return view(request, *args, **kwargs)

        return csrf_exempt(checked)  # type: ignore[no-any-return]

    return decorate
