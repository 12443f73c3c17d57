"""The dashboard apart from any web framework: a request's route, query and form in, a
response out. The mounts (the CLI's server, Django's views, Flask's blueprint) check who
is asking and the CSRF token first, then hand the request to :class:`Dashboard`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from typing import Callable, Optional, Union

import attrs

from .._hub import WebhooksEmitter
from ..stores import Store, StoreError
from . import _data, _pages

__all__ = ["ACTIONS", "HEADERS", "CsrfGuard", "Dashboard", "Response", "ROUTES"]

logger = logging.getLogger("webhooks_emitter.dashboard")

#: The two pages, by their path below the dashboard's base URL.
ROUTES = ("", "emitter")
#: What a form may ask for.
ACTIONS = ("pause", "restart", "replay", "purge")

#: Sent with every answer: nothing but the page itself may load or run (the pages use no
#: script and no outside resource), no framing, no Referer to other sites, no cache (a
#: Referer within the site stays: Django checks the Origin of a POST against it).
HEADERS: tuple[tuple[str, str], ...] = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


@attrs.frozen
class Response:
    """An answer for a mount to send: a page (``body``) or a redirect (``location``).

    ``body`` is HTML (``text/html; charset=utf-8``) unless ``content_type`` says otherwise.
    """

    status: int
    body: str = ""
    location: Optional[str] = None
    content_type: str = "text/html; charset=utf-8"


StoreSource = Callable[[], Store]
InstanceSource = Callable[[], Optional[WebhooksEmitter]]


class Dashboard:
    """The pages over one store.

    Args:
        store: gives the store to show (called on every request: a framework's store may
            only be known once its app is set up).
        instance: gives the instance whose counters (delivered, given up) to show for the
            emitters it delivers, or None.
    """

    def __init__(self, store: StoreSource, instance: Optional[InstanceSource] = None) -> None:
        self._store = store
        self._instance = instance or (lambda: None)

    def page(self, route: str, query: Mapping[str, str], page: _pages.Page) -> Response:
        """Answer a GET of ``route`` (one of :data:`ROUTES`); never changes anything.

        ``query`` may carry ``done`` and ``n`` (an outcome to show, see
        :data:`_pages.MESSAGES`) and, for the emitter page, ``id``.
        """
        emitter_id = query.get("id")
        text = _pages.message(query.get("done"), query.get("n"), emitter_id)
        if text is not None:
            page = attrs.evolve(page, message=text)
        try:
            store = self._store()
            page = attrs.evolve(page, where=store.describe())
            if route == "":
                rows = _data.overview(store, self._instance())
                return Response(200, _pages.emitters_page(rows, page))
            if route != "emitter":
                return Response(404, _pages.problem_page("Not found", "No such page.", page))
            if not emitter_id:
                return self._bad(page, "the emitter page needs ?id=EMITTER_ID")
            try:
                detail = _data.detail(store, emitter_id, self._instance())
            except (TypeError, ValueError) as exc:
                return self._bad(page, str(exc))
            if detail is None:
                return Response(
                    404,
                    _pages.problem_page(
                        "Unknown emitter", f"The store knows no emitter {emitter_id!r}.", page
                    ),
                )
            return Response(200, _pages.emitter_page(detail, page))
        except StoreError as exc:
            return self._store_error(page, exc)

    def act(
        self, route: str, query: Mapping[str, str], form: Mapping[str, str], page: _pages.Page
    ) -> Response:
        """Answer a POST of ``route`` (the CSRF token already checked by the mount): do
        what the form asks and redirect (303) to the emitter's page with the outcome.

        The form's ``action`` is one of :data:`ACTIONS`; ``replay`` takes an optional
        ``request_id`` (one event; all failed events without it), ``purge`` a ``confirm``
        field that must be the emitter id exactly (anything else deletes nothing).
        """
        emitter_id = query.get("id")
        action = form.get("action", "")
        if route != "emitter" or not emitter_id:
            return self._bad(page, "actions are posted to the emitter page (?id=EMITTER_ID)")
        if action not in ACTIONS:
            return self._bad(page, f"unknown action {action!r} (one of: {', '.join(ACTIONS)})")
        try:
            store = self._store()
            page = attrs.evolve(page, where=store.describe())
            outcome = self._do(store, action, emitter_id, form, self._instance())
        except (TypeError, ValueError) as exc:
            return self._bad(page, str(exc))
        except StoreError as exc:
            return self._store_error(page, exc)
        logger.info(
            "dashboard: %s of %r: %s (%d)",
            action,
            emitter_id,
            outcome.code,
            outcome.count,
            extra={"emitter_id": emitter_id},
        )
        location = _pages.emitter_url(
            page.base, emitter_id, done=outcome.code, n=outcome.count or None
        )
        return Response(303, location=location)

    @staticmethod
    def _do(
        store: Store,
        action: str,
        emitter_id: str,
        form: Mapping[str, str],
        instance: Optional[WebhooksEmitter],
    ) -> _data.Outcome:
        if action == "pause":
            return _data.pause(store, emitter_id, instance)
        if action == "restart":
            return _data.restart(store, emitter_id, instance)
        if action == "replay":
            return _data.replay(store, emitter_id, form.get("request_id") or None, instance)
        return _data.purge(store, emitter_id, form.get("confirm"))

    @staticmethod
    def _bad(page: _pages.Page, text: str) -> Response:
        return Response(400, _pages.problem_page("Bad request", text, page))

    @staticmethod
    def _store_error(page: _pages.Page, exc: StoreError) -> Response:
        # StoreError messages name the store without its password (the stores see to it).
        logger.warning("dashboard: %s", exc)
        return Response(503, _pages.problem_page("The store cannot be reached", str(exc), page))


_SESSION = re.compile(r"[A-Za-z0-9_-]{32,64}\Z")


class CsrfGuard:
    """CSRF tokens for mounts without a framework's own (the CLI's server, Flask).

    A browser gets a random id in a cookie (``SameSite=Strict``, ``HttpOnly``); each form
    carries the HMAC of that id under ``key``. A POST whose field is not the HMAC of its
    cookie is refused: another site can make the browser send the cookie (not with
    ``Strict``, but older browsers ignore it) but cannot read it nor compute the HMAC.

    Args:
        key: the secret key (Flask's ``SECRET_KEY`` so that every process of the app
            agrees; a random one otherwise).
    """

    cookie = "webhooks_dashboard_csrf"
    field = "csrf_token"

    def __init__(self, key: Union[str, bytes]) -> None:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if not raw:
            raise ValueError("key must not be empty")
        # Derived, so that the application's key itself never signs anything here.
        self._key = hmac.new(raw, b"webhooks_emitter dashboard csrf", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "<CsrfGuard>"

    @staticmethod
    def session(cookie: Optional[str]) -> tuple[str, bool]:
        """The browser's id from its cookie, or a new one: ``(id, new)`` (set the cookie
        when ``new``)."""
        if cookie and _SESSION.match(cookie):
            return cookie, False
        return secrets.token_urlsafe(32), True

    def token(self, session: str) -> str:
        """The value the forms of ``session`` carry."""
        return hmac.new(self._key, session.encode(), hashlib.sha256).hexdigest()

    def check(self, session: Optional[str], token: Optional[str]) -> bool:
        """Whether ``token`` (the form's field) belongs to ``session`` (the cookie)."""
        if not session or not token:
            return False
        return hmac.compare_digest(self.token(session), token)
