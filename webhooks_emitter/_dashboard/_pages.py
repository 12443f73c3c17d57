"""The dashboard's pages: pure functions from data to HTML, shared by every mount.

Every value that comes from a store, a payload or a request goes through :func:`_e` (HTML
escaping, quotes included), so a payload holding ``<script>`` shows as text. Nothing here
reads a store or a request; the mounts pass in what to show.
"""

from __future__ import annotations

import datetime
import html
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Optional

import attrs

from ..stores import FailedEvent
from ._data import Detail, EmitterRow, QueuedEvent
from ._style import STYLESHEET

__all__ = [
    "BODY_SHOWN",
    "MESSAGES",
    "REFRESH_SECONDS",
    "Page",
    "emitter_page",
    "emitter_url",
    "emitters_page",
    "message",
    "problem_page",
]

#: The emitters page reloads itself this often (seconds), without JavaScript.
REFRESH_SECONDS = 5
#: The most bytes of a body shown on a page (the rest is counted).
BODY_SHOWN = 4096

#: The one-line message of each action's outcome, by the code the redirect carries. Only
#: these texts can appear (a link cannot make the page say something else), with the
#: count and the emitter id filled in and escaped.
MESSAGES = {
    "replayed": "replayed {events}",
    "paused": "paused {emitter}: no process starts a new try of it; its events stay queued",
    "already_paused": "{emitter} was paused already",
    "restarted": "restarted {emitter}: the process holding its lease delivers what is queued",
    "not_paused": "{emitter} was not paused: nothing to do",
    "purged": "purged {events} of {emitter}",
    "purge_refused": "nothing was purged: type the emitter id {emitter} exactly to confirm",
    "unknown": "the store knows no emitter {emitter}",
}


@attrs.frozen
class Page:
    """What every page needs besides its data.

    Attributes:
        base: the URL of the emitters page, ending with ``/`` (the emitter pages and the
            forms' targets are made from it).
        where: the store, as ``Store.describe()`` names it (never with a password).
        csrf_name: the name of the hidden field every form carries.
        csrf_token: its value.
        message: the one-line outcome of the last action, or None.
    """

    base: str
    where: str
    csrf_name: str
    csrf_token: str
    message: Optional[str] = None


def _e(value: object) -> str:
    """``value`` as text that HTML shows as it is."""
    return html.escape(str(value), quote=True)


def emitter_url(base: str, emitter_id: str, **query: object) -> str:
    """The URL of the page of ``emitter_id`` (unescaped: pass it through ``_e`` in HTML)."""
    params = {"id": emitter_id, **{k: str(v) for k, v in query.items() if v is not None}}
    return f"{base}emitter?{urllib.parse.urlencode(params)}"


def message(code: Optional[str], count: Optional[str], emitter_id: Optional[str]) -> Optional[str]:
    """The text of an outcome code (see :data:`MESSAGES`), or None for no or an unknown code."""
    template = MESSAGES.get(code or "")
    if template is None:
        return None
    try:
        n = max(int(count or 0), 0)
    except ValueError:
        n = 0
    events = "1 event" if n == 1 else f"{n} events"
    return template.format(events=events, emitter=emitter_id or "?")


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _when(moment: Optional[datetime.datetime]) -> str:
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _body(body: bytes) -> str:
    text = body[:BODY_SHOWN].decode("utf-8", "replace")
    more = len(body) - BODY_SHOWN
    tail = f'\n<span class="muted">… {more} more bytes</span>' if more > 0 else ""
    return f'<pre class="body">{_e(text)}{tail}</pre>'


def _number(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def _layout(title: str, page: Page, content: str, *, refresh: bool = False) -> str:
    head_refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">\n' if refresh else ""
    note = (
        f'<p class="message" role="status" id="message">{_e(page.message)}</p>\n'
        if page.message
        else ""
    )
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="same-origin">\n'
        f"{head_refresh}<title>{_e(title)} · webhooks</title>\n"
        f"<style>{STYLESHEET}</style>\n</head>\n<body>\n"
        "<header>\n"
        f'<h1><a href="{_e(page.base)}">Webhooks</a></h1>\n'
        f"<p>{_e(page.where)}</p>\n"
        "</header>\n"
        f"<main>\n{note}{content}</main>\n</body>\n</html>\n"
    )


def _form(
    page: Page,
    action_url: str,
    action: str,
    label: str,
    *,
    fields: Iterable[tuple[str, str]] = (),
    extra: str = "",
    danger: bool = False,
) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{_e(name)}" value="{_e(value)}">'
        for name, value in ((page.csrf_name, page.csrf_token), ("action", action), *fields)
    )
    cls = ' class="danger"' if danger else ""
    return (
        f'<form method="post" action="{_e(action_url)}" class="{_e(action)}">{hidden}{extra}'
        f'<button type="submit"{cls}>{_e(label)}</button></form>'
    )


# -- the emitters -------------------------------------------------------------------------------


def emitters_page(rows: Sequence[EmitterRow], page: Page) -> str:
    """The emitters page: one row per emitter id, worst first; reloads every 5 s."""
    counters = any(row.delivered is not None for row in rows)
    head = (
        '<tr><th scope="col">Emitter</th><th scope="col" class="num">Queued</th>'
        '<th scope="col" class="num">Failed</th><th scope="col">State</th>'
        '<th scope="col" class="num">Oldest queued</th><th scope="col">Lease holder</th>'
        + (
            '<th scope="col" class="num">Delivered here</th>'
            '<th scope="col" class="num">Given up here</th>'
            if counters
            else ""
        )
        + "</tr>"
    )
    body = []
    for row in rows:
        state = '<span class="paused">paused</span>' if row.paused else "running"
        failed_cls = "num bad" if row.failed else "num"
        cells = [
            f'<th scope="row"><a href="{_e(emitter_url(page.base, row.emitter_id))}">'
            f"{_e(row.emitter_id)}</a></th>",
            f'<td class="num">{row.queued}</td>',
            f'<td class="{failed_cls}">{row.failed}</td>',
            f"<td>{state}</td>",
            f'<td class="num">{_e(_age(row.oldest_queued_age))}</td>',
            f"<td>{_e(row.lease_holder or '-')}</td>",
        ]
        if counters:
            cells.append(f'<td class="num">{_number(row.delivered)}</td>')
            cells.append(f'<td class="num">{_number(row.given_up)}</td>')
        body.append(f'<tr data-emitter="{_e(row.emitter_id)}">{"".join(cells)}</tr>')
    if rows:
        table = (
            f'<p class="muted">{len(rows)} emitter(s), the oldest queued event first; '
            f"this page reloads every {REFRESH_SECONDS} s</p>\n"
            '<div class="scroll"><table id="emitters">\n'
            f"<thead>{head}</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>\n"
        )
    else:
        table = '<p id="emitters-none">The store knows no emitter yet.</p>\n'
    return _layout("Emitters", page, "<h2>Emitters</h2>\n" + table, refresh=True)


# -- one emitter --------------------------------------------------------------------------------


def _failed_table(events: Sequence[FailedEvent], page: Page, url: str) -> str:
    if not events:
        return '<p id="failed-none">No failed events.</p>\n'
    rows = []
    for event in events:
        status = "-" if event.status_code is None else str(event.status_code)
        replay_one = _form(page, url, "replay", "Replay", fields=[("request_id", event.request_id)])
        rows.append(
            f'<tr data-request-id="{_e(event.request_id)}">'
            f"<td><code>{_e(event.request_id)}</code></td>"
            f"<td>{_e(event.event)}</td>"
            f'<td class="num">{event.attempts}</td>'
            f'<td class="num">{_e(status)}</td>'
            f"<td>{_e(event.error or '-')}</td>"
            f"<td>{_e(_when(event.failed_at))}</td>"
            f"<td>{_body(event.body)}</td>"
            f"<td>{replay_one}</td></tr>"
        )
    return (
        '<div class="scroll"><table id="failed">\n<thead><tr>'
        '<th scope="col">Delivery id</th><th scope="col">Event</th>'
        '<th scope="col" class="num">Tries</th><th scope="col" class="num">Last status</th>'
        '<th scope="col">Last error</th><th scope="col">Failed at</th>'
        '<th scope="col">Body</th><th scope="col"><span class="muted">action</span></th>'
        "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>\n"
    )


def _queued_table(events: Optional[Sequence[QueuedEvent]]) -> str:
    if events is None:
        return '<p class="muted">This store cannot list its queued events here.</p>\n'
    if not events:
        return '<p id="queued-none">Nothing queued.</p>\n'
    rows = []
    for event in events:
        status = "-" if event.status_code is None else str(event.status_code)
        rows.append(
            f'<tr data-request-id="{_e(event.request_id)}">'
            f"<td><code>{_e(event.request_id)}</code></td>"
            f"<td>{_e(event.event)}</td>"
            f"<td>{_e(_when(event.emitted_at))}</td>"
            f'<td class="num">{event.attempts}</td>'
            f'<td class="num">{_e(status)}</td>'
            f"<td>{_e(event.error or '-')}</td>"
            f"<td>{_body(event.body)}</td></tr>"
        )
    return (
        '<div class="scroll"><table id="queued">\n<thead><tr>'
        '<th scope="col">Delivery id</th><th scope="col">Event</th>'
        '<th scope="col">Emitted at</th><th scope="col" class="num">Tries so far</th>'
        '<th scope="col" class="num">Last status</th><th scope="col">Last error</th>'
        '<th scope="col">Body</th></tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>\n"
    )


def emitter_page(detail: Detail, page: Page) -> str:
    """The page of one emitter: its state, forms to act on it, its oldest failed and
    queued events."""
    row = detail.row
    url = emitter_url(page.base, row.emitter_id)
    state = '<span class="paused">paused</span>' if row.paused else "running"
    facts = [
        ("State", state),
        ("Queued", str(row.queued)),
        ("Failed", str(row.failed)),
        ("Oldest queued", _e(_age(row.oldest_queued_age))),
        ("Lease holder", _e(row.lease_holder or "-")),
    ]
    if row.delivered is not None:
        facts.append(("Delivered here", _number(row.delivered)))
        facts.append(("Given up here", _number(row.given_up)))
    summary = (
        '<div class="scroll"><table id="summary"><tbody>'
        + "".join(f'<tr><th scope="row">{name}</th><td>{value}</td></tr>' for name, value in facts)
        + "</tbody></table></div>\n"
    )
    toggle = (
        _form(page, url, "restart", "Restart") if row.paused else _form(page, url, "pause", "Pause")
    )
    confirm = (
        '<label for="confirm">type the emitter id to purge every event</label>'
        '<input type="text" id="confirm" name="confirm" autocomplete="off" spellcheck="false" '
        "required>"
    )
    actions = (
        '<div class="actions">'
        + toggle
        + _form(page, url, "replay", f"Replay all failed ({row.failed})")
        + _form(page, url, "purge", "Purge", extra=confirm, danger=True)
        + "</div>\n"
    )
    shown_failed = (
        f" (the oldest {len(detail.failed)} of {row.failed})"
        if row.failed > len(detail.failed)
        else ""
    )
    shown_queued = (
        f" (the oldest {len(detail.queued)} of {row.queued})"
        if detail.queued is not None and row.queued > len(detail.queued)
        else ""
    )
    content = (
        f'<p><a href="{_e(page.base)}">← all emitters</a></p>\n'
        f'<h2>Emitter <code id="emitter-id">{_e(row.emitter_id)}</code></h2>\n'
        + summary
        + actions
        + f"<h2>Failed events{_e(shown_failed)}</h2>\n"
        + _failed_table(detail.failed, page, url)
        + f"<h2>Queued events{_e(shown_queued)}</h2>\n"
        + _queued_table(detail.queued)
    )
    return _layout(row.emitter_id, page, content)


def problem_page(title: str, text: str, page: Page) -> str:
    """A page that says what went wrong (a store error, an unknown emitter, a refusal)."""
    content = (
        f'<h2>{_e(title)}</h2>\n<p id="problem">{_e(text)}</p>\n'
        f'<p><a href="{_e(page.base)}">← all emitters</a></p>\n'
    )
    return _layout(title, page, content)
