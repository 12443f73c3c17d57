"""Flask integration: emitters from ``app.config``, ``flask webhooks`` commands, and a receiver
decorator. ``pip install 'webhooks_emitter[flask]'``::

    from flask import Flask
    from webhooks_emitter.contrib.flask import Webhooks, verify_webhook

    webhooks = Webhooks()

    def create_app():
        app = Flask(__name__)
        app.config["WEBHOOKS_EMITTER_EMITTERS"] = {
            "billing": {"url": "https://billing.example/hooks", "events": ["order.paid"],
                        "secret": "s3cret"},
        }
        webhooks.init_app(app)

        @app.post("/orders/<int:order_id>/pay")
        def pay(order_id):
            return {"request_id": webhooks.emit("order.paid", {"order": order_id})}

        return app

Settings (``app.config``), checked at :meth:`Webhooks.init_app` (``ValueError`` or
``TypeError`` naming the key):

``WEBHOOKS_EMITTER_STORE``
    the store's URL: ``memory:`` (default), ``sqlite:///relative/path.db`` (relative to
    the working directory), ``sqlite:////absolute/path.db``, ``postgresql://...``.
``WEBHOOKS_EMITTER_EMITTERS``
    emitter id -> ``{"url": ..., "events": [...] ("*" for all), <Config field>: ...}``.
``WEBHOOKS_EMITTER_DELIVER``
    True (default); False for web processes that only store events for
    ``flask webhooks worker`` (a durable store is then needed).
``WEBHOOKS_EMITTER_EXIT_TIMEOUT``
    seconds the exit hook (and the worker's shutdown) may spend delivering (default 5).

Each application gets its own :class:`~webhooks_emitter.WebhooksEmitter`, kept at
``app.extensions["webhooks_emitter"]``; the :class:`Webhooks` object holds nothing of any app.

``flask webhooks status|failed|replay`` only read or change the store (CONTRACT section 12):
when the ``flask`` command loads the app for one of them, ``init_app`` checks the settings
but attaches nothing (the app's instance is an idle one on the memory store), and the
command opens the settings' store itself, creating nothing. ``flask webhooks worker``
delivers, whatever ``WEBHOOKS_EMITTER_DELIVER`` says.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Callable, Optional, TypeVar, Union

import click
from flask import Blueprint, Flask, Response, current_app, request
from flask.cli import AppGroup, ScriptInfo

from .. import signing
from .._hub import WebhooksEmitter
from .._reports import (
    failed_json,
    format_failed,
    format_status,
    list_failed,
    replay_failed,
    status,
)
from .._settings import Settings, attach_all, load_callable, settings_from_mapping
from .._worker import HTTP_HELP, parse_http, run_worker, serve_http
from ..exceptions import WebhooksEmitterError
from ..stores import Store, StoreError
from . import ReceiverCheck, SecretSource

__all__ = ["EXTENSION", "PREFIX", "Webhooks", "cli", "get_instance", "verify_webhook"]

#: The key of the app's instance in ``app.extensions``.
EXTENSION = "webhooks_emitter"
#: The prefix of the settings in ``app.config``.
PREFIX = "WEBHOOKS_EMITTER_"
#: The ``flask webhooks`` commands that only read or change the store (CONTRACT section 12).
OPERATOR_COMMANDS = frozenset({"status", "failed", "replay"})
# The apps whose instance init_app left idle, because the flask command line loaded them
# for an operator command (keyed by id: an app is not hashable by its settings).
_IDLE = "webhooks_emitter.idle"

F = TypeVar("F", bound=Callable[..., Any])


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """The ``WEBHOOKS_EMITTER_*`` settings of ``config`` (an ``app.config``), checked.

    Raises:
        ValueError, TypeError: a bad setting; the message starts with its key.
    """
    values = {
        name[len(PREFIX) :]: value for name, value in config.items() if name.startswith(PREFIX)
    }
    return settings_from_mapping(values, key_format=PREFIX + "{}")


def _loading_for_an_operator_command() -> bool:
    """Whether the ``flask`` command line is loading the app to run ``flask webhooks
    status|failed|replay`` (Flask loads the app before it can tell which command runs, and
    keeps no list of the arguments: they are read from ``sys.argv``)."""
    context = click.get_current_context(silent=True)
    if context is None or not isinstance(context.find_object(ScriptInfo), ScriptInfo):
        return False
    words = [word for word in sys.argv[1:] if not word.startswith("-")]
    return any(
        word == cli.name and following in OPERATOR_COMMANDS
        for word, following in zip(words, words[1:])
    )


def get_instance(app: Optional[Flask] = None) -> WebhooksEmitter:
    """The :class:`~webhooks_emitter.WebhooksEmitter` of ``app`` (default: the current app).

    Raises:
        RuntimeError: no app is given nor current, or :meth:`Webhooks.init_app` was not
            called for it.
    """
    if app is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        instance = app.extensions[EXTENSION]
    except KeyError:
        raise RuntimeError(
            f"webhooks_emitter is not set up on the app {app.name!r}: call "
            "Webhooks(app) or webhooks.init_app(app) first"
        ) from None
    assert isinstance(instance, WebhooksEmitter)
    return instance


class Webhooks:
    """The Flask extension: gives each app its own :class:`~webhooks_emitter.WebhooksEmitter`.

    Args:
        app: an app to set up at once; or call :meth:`init_app` later (app factories).
    """

    def __init__(self, app: Optional[Flask] = None) -> None:
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return "<Webhooks>"

    def init_app(self, app: Flask) -> None:
        """Check ``app.config``'s settings, make the app's instance (stored at
        ``app.extensions["webhooks_emitter"]``) with its emitters attached, and add the
        ``flask webhooks`` commands.

        Raises:
            ValueError, TypeError: a bad setting; the message starts with its key.
            RuntimeError: the app is set up already.
            StoreError: the store could not be opened.
        """
        if EXTENSION in app.extensions:
            raise RuntimeError(
                f"webhooks_emitter is already set up on the app {app.name!r}; "
                "call init_app once per app"
            )
        settings = settings_from_config(app.config)
        if _loading_for_an_operator_command():
            # `flask webhooks status` loads the app first: its instance must not deliver,
            # take a lease or flush at exit. The command opens the store itself.
            app.extensions[EXTENSION] = WebhooksEmitter(settings.exit_timeout)
            app.extensions[_IDLE] = True
        else:
            app.extensions[EXTENSION] = settings.make_instance()
        app.cli.add_command(cli)

    @property
    def instance(self) -> WebhooksEmitter:
        """The current app's :class:`~webhooks_emitter.WebhooksEmitter`."""
        return get_instance()

    def emit(
        self,
        event: str,
        payload: Any,
        request_id: Optional[str] = None,
        *,
        ordering_key: Optional[str] = None,
        connection: Any = None,
        to: Union[str, Iterable[str], None] = None,
    ) -> str:
        """Emit on the current app's instance; see :meth:`WebhooksEmitter.emit`.

        Returns:
            The request id.
        """
        return get_instance().emit(
            event, payload, request_id, ordering_key=ordering_key, connection=connection, to=to
        )

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait for the current app's queued events; see :meth:`WebhooksEmitter.flush`."""
        return get_instance().flush(timeout)

    def dashboard_blueprint(
        self, auth: Callable[[], Any], *, name: str = "webhooks_dashboard"
    ) -> Blueprint:
        """The operators' dashboard over the current app's store, as a blueprint to register
        (``app.register_blueprint(webhooks.dashboard_blueprint(auth=...), url_prefix=...)``).

        Args:
            auth: called with no argument on every request (inside the request context); a
                false answer gets 403. There is no default that lets everyone in.
            name: the blueprint's name.

        Raises:
            TypeError: ``auth`` is not callable.
        """
        from ._flask_dashboard import dashboard_blueprint

        return dashboard_blueprint(auth, get_instance, name=name)


def verify_webhook(
    secret: SecretSource,
    scheme: Union[signing.Scheme, str] = signing.WEBHOOKS_EMITTER,
    tolerance: float = 300,
    *,
    header_identifier: str = "Webhooks",
) -> Callable[[F], F]:
    """A view decorator for receivers: the view runs only for a request whose raw body is
    signed with ``secret``; otherwise the answer is 401 and the view is not called::

        @app.post("/hooks")
        @verify_webhook(lambda: current_app.config["HOOKS_SECRET"])
        def hooks():
            ...

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

    def refuse(why: str) -> Response:
        return Response(f"invalid webhook signature: {why}\n", status=401, mimetype="text/plain")

    def decorate(view: F) -> F:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def checked_async(*args: Any, **kwargs: Any) -> Any:
                why = check.failure(request.get_data(cache=True), request.headers)
                if why is not None:
                    return refuse(why)
                return await view(*args, **kwargs)

            return checked_async  # type: ignore[return-value]

        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            why = check.failure(request.get_data(cache=True), request.headers)
            if why is not None:
                return refuse(why)
            return view(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorate


# -- flask webhooks ... -------------------------------------------------------------------


cli = AppGroup("webhooks", help="Deliver and inspect this app's webhooks (webhooks_emitter).")


def _durable_instance(what: str) -> WebhooksEmitter:
    instance = get_instance()
    settings = settings_from_config(current_app.config)
    if not settings.durable:
        raise click.UsageError(
            f"{what} needs a durable store (sqlite:///path.db or postgresql://...); memory: "
            "holds only one process's events (set WEBHOOKS_EMITTER_STORE)"
        )
    return instance


@contextmanager
def _operator_store(what: str) -> Iterator[tuple[Store, Optional[WebhooksEmitter]]]:
    """The app's store for an operator command, and the app's instance when it is live
    (the app was made in this process, e.g. by a test: its emitters may be woken).

    A live instance lends its store; otherwise the store is opened for the command alone,
    without creating anything (a mistyped path must not show as an empty store), and closed
    after it. Nothing here delivers, takes a lease or waits for an exit flush.
    """
    instance = _durable_instance(what)
    if not current_app.extensions.get(_IDLE) and instance.store.durable:
        yield instance.store, instance
        return
    settings = settings_from_config(current_app.config)
    try:
        store = settings.open_store(create=False)
        store.open()
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    except (StoreError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield store, None
    finally:
        store.close()


@cli.command("worker")
@click.option(
    "--setup",
    metavar="MODULE:FUNCTION",
    help="a function called with the worker's instance, to attach more emitters",
)
@click.option(
    "--exit-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="seconds the shutdown may spend delivering (default: WEBHOOKS_EMITTER_EXIT_TIMEOUT)",
)
@click.option("--http", "http", metavar="HOST:PORT", default=None, help=HTTP_HELP)
def worker_command(
    setup: Optional[str], exit_timeout: Optional[float], http: Optional[str]
) -> None:
    """Deliver the app's stored events until SIGTERM or SIGINT (whatever
    WEBHOOKS_EMITTER_DELIVER says: that setting is for the web processes)."""
    instance = _durable_instance("flask webhooks worker")
    settings = settings_from_config(current_app.config)
    function = None
    bind = None
    if http is not None:
        try:
            bind = parse_http(http)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--http") from None
    if setup is not None:
        try:
            function = load_callable(setup)
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--setup") from None
    server = None
    try:
        if not instance.delivers:
            instance = WebhooksEmitter(
                settings.exit_timeout, store=settings.open_store(), deliver=True
            )
        if bind is not None:
            # Before the emitters are attached: a worker that cannot serve its probes
            # delivers nothing (exit 2, one line saying why).
            try:
                server = serve_http(instance, bind)
            except WebhooksEmitterError as exc:
                raise click.UsageError(str(exc)) from None
        if instance is not get_instance():
            attach_all(instance, settings.emitters)
        if function is not None:
            function(instance)
    except StoreError as exc:
        if server is not None:
            server.close()
        raise click.ClickException(str(exc)) from None
    timeout = settings.exit_timeout if exit_timeout is None else exit_timeout

    def ready() -> None:
        click.echo(
            f"webhooks worker: delivering for {len(instance.list_emitters())} emitter(s) "
            f"over {instance.store.describe()}; stop with SIGTERM or Ctrl-C"
        )
        if server is not None:
            click.echo(f"webhooks worker: serving /metrics, /healthz and /readyz at {server.url}")

    code = run_worker(instance, timeout, ready=ready, http=server)
    click.echo("webhooks worker: stopped")
    raise SystemExit(code)


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def status_command(as_json: bool) -> None:
    """Per emitter id: queued, failed, paused, age of the oldest queued event, lease."""
    with _operator_store("flask webhooks status") as (store, _):
        try:
            report = status(store)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report, indent=2) if as_json else format_status(report))


@cli.command("failed")
@click.argument("emitter_id")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def failed_command(emitter_id: str, as_json: bool, limit: int) -> None:
    """List the events EMITTER_ID gave up, oldest first."""
    with _operator_store("flask webhooks failed") as (store, _):
        try:
            events = list_failed(store, emitter_id, limit)
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="EMITTER_ID") from None
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(failed_json(events), indent=2) if as_json else format_failed(events))


@cli.command("replay")
@click.argument("emitter_id")
@click.argument("request_ids", nargs=-1)
def replay_command(emitter_id: str, request_ids: tuple[str, ...]) -> None:
    """Queue EMITTER_ID's failed events again (all, or those REQUEST_IDS); prints the count."""
    with _operator_store("flask webhooks replay") as (store, live):
        try:
            if live is not None:
                # An emitter of this process, if any, starts on the replayed events at once.
                count = live.replay(emitter_id, request_ids or None)
            else:
                count = replay_failed(store, emitter_id, request_ids or None)
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(str(exc)) from None
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(str(count))
