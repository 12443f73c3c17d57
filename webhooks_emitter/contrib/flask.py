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
    the store's URL: ``memory:`` (default), ``sqlite:///path.db``, ``postgresql://...``.
``WEBHOOKS_EMITTER_EMITTERS``
    emitter id -> ``{"url": ..., "events": [...] ("*" for all), <Config field>: ...}``.
``WEBHOOKS_EMITTER_DELIVER``
    True (default); False for web processes that only store events for
    ``flask webhooks worker`` (a durable store is then needed).
``WEBHOOKS_EMITTER_EXIT_TIMEOUT``
    seconds the exit hook (and the worker's shutdown) may spend delivering (default 5).

Each application gets its own :class:`~webhooks_emitter.WebhooksEmitter`, kept at
``app.extensions["webhooks_emitter"]``; the :class:`Webhooks` object holds nothing of any app.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, TypeVar, Union

import click
from flask import Flask, Response, current_app, request
from flask.cli import AppGroup

from .. import signing
from .._hub import WebhooksEmitter
from .._operator import (
    Settings,
    failed_json,
    format_failed,
    format_status,
    list_failed,
    load_callable,
    require_durable,
    run_worker,
    settings_from_mapping,
    status,
)
from ..stores import StoreError
from . import ReceiverCheck, SecretSource

__all__ = ["EXTENSION", "PREFIX", "Webhooks", "cli", "get_instance", "verify_webhook"]

#: The key of the app's instance in ``app.extensions``.
EXTENSION = "webhooks_emitter"
#: The prefix of the settings in ``app.config``.
PREFIX = "WEBHOOKS_EMITTER_"

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
    try:
        require_durable(instance.store, what)
    except ValueError as exc:
        raise click.UsageError(f"{exc} (set WEBHOOKS_EMITTER_STORE)") from None
    return instance


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
def worker_command(setup: Optional[str], exit_timeout: Optional[float]) -> None:
    """Deliver the app's stored events until SIGTERM or SIGINT (whatever
    WEBHOOKS_EMITTER_DELIVER says: that setting is for the web processes)."""
    instance = _durable_instance("flask webhooks worker")
    settings = settings_from_config(current_app.config)
    function = None
    if setup is not None:
        try:
            function = load_callable(setup)
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--setup") from None
    try:
        if not instance.delivers:
            instance = settings.make_instance(deliver=True)
        if function is not None:
            function(instance)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    timeout = settings.exit_timeout if exit_timeout is None else exit_timeout

    def ready() -> None:
        click.echo(
            f"webhooks worker: delivering for {len(instance.list_emitters())} emitter(s) "
            f"over {instance.store.describe()}; stop with SIGTERM or Ctrl-C"
        )

    code = run_worker(instance, timeout, ready=ready)
    click.echo("webhooks worker: stopped")
    raise SystemExit(code)


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def status_command(as_json: bool) -> None:
    """Per emitter id: queued, failed, paused, age of the oldest queued event, lease."""
    instance = _durable_instance("flask webhooks status")
    try:
        report = status(instance.store)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report, indent=2) if as_json else format_status(report))


@cli.command("failed")
@click.argument("emitter_id")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def failed_command(emitter_id: str, as_json: bool, limit: int) -> None:
    """List the events EMITTER_ID gave up, oldest first."""
    instance = _durable_instance("flask webhooks failed")
    try:
        events = list_failed(instance.store, emitter_id, limit)
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
    instance = _durable_instance("flask webhooks replay")
    try:
        # Through the instance: an emitter of this process, if any, starts at once.
        count = instance.replay(emitter_id, request_ids or None)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(count))
