"""The operators' dashboard as a Flask blueprint: what ``Webhooks.dashboard_blueprint`` returns.

It imports nothing of ``contrib.flask`` (which imports it when the method is called): the
extension hands over how to find the current app's instance.

``auth`` is called on every request; a false answer is a 403. There is no default: a
dashboard that purges events is never open to everyone by accident. Forms carry a CSRF
token signed with the app's ``SECRET_KEY`` (set it when several processes serve the app;
without it each process signs with a random key of its own).
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Optional

from flask import Blueprint, current_app, request, url_for
from flask import Response as FlaskResponse

from .._dashboard import HEADERS, CsrfGuard, Dashboard, Page, Response
from .._hub import WebhooksEmitter

__all__ = ["dashboard_blueprint"]

_FORBIDDEN = "403 Forbidden\n"


def dashboard_blueprint(
    auth: Callable[[], Any],
    get_instance: Callable[[], WebhooksEmitter],
    *,
    name: str = "webhooks_dashboard",
) -> Blueprint:
    """A blueprint serving the dashboard over the current app's store (register it with a
    ``url_prefix``).

    Args:
        auth: called with no argument on every request (inside the request context: use
            ``flask.request``, ``flask_login.current_user``...); a false answer gets 403.
        get_instance: returns the current app's instance (inside a request).
        name: the blueprint's name.

    Raises:
        TypeError: ``auth`` is not callable.
    """
    if not callable(auth):
        raise TypeError(
            "auth must be a callable returning True for the users allowed to see and act on "
            f"the dashboard, not {type(auth).__name__} (there is no default that lets everyone in)"
        )
    blueprint = Blueprint(name, __name__)
    dashboard = Dashboard(lambda: get_instance().store, get_instance)
    fallback_key = secrets.token_bytes(32)

    def guard() -> CsrfGuard:
        key = current_app.secret_key
        return CsrfGuard(key if key else fallback_key)

    def send(response: Response, cookie: Optional[str] = None) -> FlaskResponse:
        answer = FlaskResponse(
            response.body, status=response.status, content_type=response.content_type
        )
        for header, value in HEADERS:
            answer.headers[header] = value
        if response.location is not None:
            answer.headers["Location"] = response.location
        if cookie is not None:
            answer.set_cookie(
                CsrfGuard.cookie,
                cookie,
                path=url_for(".emitters"),
                httponly=True,
                samesite="Strict",
                secure=request.is_secure,
            )
        return answer

    @blueprint.before_request
    def check_auth() -> Optional[FlaskResponse]:
        if not auth():
            return send(Response(403, _FORBIDDEN, content_type="text/plain; charset=utf-8"))
        return None

    def serve(route: str) -> FlaskResponse:
        csrf = guard()
        session, new = CsrfGuard.session(request.cookies.get(CsrfGuard.cookie))
        page = Page(
            base=url_for(".emitters"),
            where="",
            csrf_name=CsrfGuard.field,
            csrf_token=csrf.token(session),
        )
        query = {k: v for k, v in request.args.items()}
        if request.method == "POST":
            form = {k: v for k, v in request.form.items()}
            if new or not csrf.check(session, form.get(CsrfGuard.field)):
                return send(
                    Response(
                        403,
                        "403 Forbidden: the form's CSRF token is missing or wrong; reload the "
                        "page and try again\n",
                        content_type="text/plain; charset=utf-8",
                    ),
                    session if new else None,
                )
            return send(dashboard.act(route, query, form, page))
        return send(dashboard.page(route, query, page), session if new else None)

    @blueprint.route("/", methods=["GET", "POST"])
    def emitters() -> FlaskResponse:
        return serve("")

    @blueprint.route("/emitter", methods=["GET", "POST"])
    def emitter() -> FlaskResponse:
        return serve("emitter")

    return blueprint
