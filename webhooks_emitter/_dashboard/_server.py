"""The dashboard as its own small web server (``webhooks-emitter dashboard``): stdlib
``wsgiref`` in a thread, opened by a random token, as Jupyter does.

The printed URL carries ``?token=...``; the first request with it gets the token in a
cookie and is redirected to the same page without it (so it does not stay in the address
bar, the history or a Referer). A request with neither a good token nor the cookie gets 403.
"""

from __future__ import annotations

import http.cookies
import secrets
import socket
import socketserver
import threading
import urllib.parse
import wsgiref.simple_server
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

from ..stores import Store
from ._app import HEADERS, ROUTES, CsrfGuard, Dashboard, Response
from ._pages import Page

__all__ = ["DashboardServer", "TokenApp", "parse_bind"]

_MAX_FORM = 64 * 1024  # a form is a few fields; more is refused
_STATUS = {
    200: "200 OK",
    303: "303 See Other",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    503: "503 Service Unavailable",
}
_FORBIDDEN = (
    "403 Forbidden: open the URL that `webhooks-emitter dashboard` printed (it carries "
    "?token=...)\n"
)

StartResponse = Callable[..., Any]


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8470`` for IPv6; a bare ``PORT`` means 127.0.0.1) as a pair.

    Raises:
        ValueError: not of that form, or the port is not 0 to 65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--bind must be HOST:PORT (e.g. 127.0.0.1:8470), got {text!r}")
    return host, int(port)


def _first(values: Mapping[str, list[str]]) -> dict[str, str]:
    return {name: found[0] for name, found in values.items() if found}


class TokenApp:
    """The WSGI application: the token check, CSRF, then :class:`Dashboard`.

    Args:
        dashboard: the pages.
        token: the secret that opens them.
        cookie: the name of the cookie that keeps the token (one per port, so that two
            dashboards on one host do not log each other out).
    """

    def __init__(self, dashboard: Dashboard, token: str, cookie: str) -> None:
        self._dashboard = dashboard
        self._token = token
        self._cookie = cookie
        self._csrf = CsrfGuard(secrets.token_bytes(32))

    def __repr__(self) -> str:
        return "<TokenApp>"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "/") or "/"
        base = environ.get("SCRIPT_NAME", "").rstrip("/") + "/"
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(environ.get("HTTP_COOKIE", ""))
        except http.cookies.CookieError:
            pass
        held = cookies[self._cookie].value if self._cookie in cookies else None

        given = query.pop("token", None)
        if given is not None:
            if not secrets.compare_digest(given[0].encode(), self._token.encode()):
                return self._send(start_response, Response(403, _FORBIDDEN, content_type=_TEXT))
            # Keep it in a cookie and show the page without it.
            rest = urllib.parse.urlencode(query, doseq=True)
            location = base + path.lstrip("/") + (f"?{rest}" if rest else "")
            cookie = f"{self._cookie}={self._token}; Path=/; HttpOnly; SameSite=Strict"
            return self._send(start_response, Response(303, location=location), [cookie])
        if held is None or not secrets.compare_digest(held.encode(), self._token.encode()):
            return self._send(start_response, Response(403, _FORBIDDEN, content_type=_TEXT))

        route = path.strip("/")
        fields = _first(query)
        # The token is the browser's session: its forms carry the HMAC of it.
        page = Page(
            base=base, where="", csrf_name=CsrfGuard.field, csrf_token=self._csrf.token(held)
        )
        if route not in ROUTES:
            return self._send(start_response, self._dashboard.page(route, fields, page))
        if method in ("GET", "HEAD"):
            return self._send(start_response, self._dashboard.page(route, fields, page))
        if method != "POST":
            return self._send(
                start_response,
                Response(405, "405 Method Not Allowed\n", content_type=_TEXT),
                allow="GET, HEAD, POST",
            )
        form = self._form(environ)
        if form is None:
            return self._send(
                start_response, Response(413, "413 the form is too large\n", content_type=_TEXT)
            )
        if not self._csrf.check(held, form.get(CsrfGuard.field)):
            return self._send(
                start_response,
                Response(
                    403,
                    "403 Forbidden: the form's CSRF token is missing or wrong; "
                    "reload the page and try again\n",
                    content_type=_TEXT,
                ),
            )
        return self._send(start_response, self._dashboard.act(route, fields, form, page))

    @staticmethod
    def _form(environ: Mapping[str, Any]) -> Optional[dict[str, str]]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > _MAX_FORM:
            return None
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        text = raw.decode("utf-8", "replace")
        return _first(urllib.parse.parse_qs(text, keep_blank_values=True))

    @staticmethod
    def _send(
        start_response: StartResponse,
        response: Response,
        cookies: Iterable[str] = (),
        allow: Optional[str] = None,
    ) -> list[bytes]:
        body = response.body.encode("utf-8")
        headers = [
            *HEADERS,
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(body))),
        ]
        if response.location is not None:
            headers.append(("Location", response.location))
        if allow is not None:
            headers.append(("Allow", allow))
        headers.extend(("Set-Cookie", cookie) for cookie in cookies)
        start_response(_STATUS.get(response.status, f"{response.status} Error"), headers)
        return [body]


_TEXT = "text/plain; charset=utf-8"


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    """One thread per request, so a slow store read never blocks the next page."""

    daemon_threads = True


class _Server6(_Server):
    """The same on an IPv6 address."""

    address_family = socket.AF_INET6


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    """No access log on standard error (the URL's token would be in it)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class DashboardServer:
    """The dashboard over ``store`` on ``host:port``, served from a daemon thread.

    Args:
        store: the durable store to show and act on (left open: the caller closes it).
        host: the address to bind (127.0.0.1 unless told).
        port: the port, 0 for a free one.
    """

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 8470) -> None:
        self.token = secrets.token_urlsafe(32)
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _Quiet)
        self.host = host
        self.port = int(self._server.server_address[1])
        app = TokenApp(Dashboard(lambda: store), self.token, f"webhooks_dashboard_{self.port}")
        self._server.set_app(app)
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return f"<DashboardServer {self.host}:{self.port}>"

    @property
    def url(self) -> str:
        """The URL to open, with its token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def start(self) -> DashboardServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="webhooks-emitter-dashboard",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
