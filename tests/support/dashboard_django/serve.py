"""Serve the dashboard's test site on 127.0.0.1 until SIGTERM, for the browser tests.

Creates the site's tables and two users, ``staff`` (is_staff) and ``clerk`` (not staff),
both with the password ``pw-for-tests``; then prints ``serving on PORT`` and serves (one
thread per request) until SIGTERM, when it exits 0.
"""

from __future__ import annotations

import os
import signal
import socketserver
import sys
import threading
import wsgiref.simple_server
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashsite.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

PASSWORD = "pw-for-tests"


class Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    """One thread per request."""

    daemon_threads = True


class Quiet(wsgiref.simple_server.WSGIRequestHandler):
    """No access log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    """Migrate, add the users, serve until SIGTERM."""
    call_command("migrate", verbosity=0, interactive=False)
    User.objects.create_user("staff", password=PASSWORD, is_staff=True)
    User.objects.create_user("clerk", password=PASSWORD, is_staff=False)
    server = Server(("127.0.0.1", 0), Quiet)
    server.set_app(get_wsgi_application())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    print(f"serving on {server.server_address[1]}", flush=True)
    stop.wait()
    server.shutdown()
    thread.join()
    server.server_close()


if __name__ == "__main__":
    main()
