"""The operators' dashboard: server-rendered pages over a store, mounted three ways.

``webhooks-emitter dashboard --store URL`` (:mod:`._server`), Django's
``webhooks_emitter.contrib.django.urls`` and Flask's
``webhooks_emitter.contrib.flask.Webhooks.dashboard_blueprint`` all hand their requests to
one :class:`Dashboard`, whose pages are pure functions of the store's data
(:mod:`._pages`) and whose actions are the operator functions (:mod:`._data`).
"""

from __future__ import annotations

from ._app import ACTIONS, HEADERS, ROUTES, CsrfGuard, Dashboard, Response
from ._pages import Page

__all__ = ["ACTIONS", "HEADERS", "ROUTES", "CsrfGuard", "Dashboard", "Page", "Response"]
