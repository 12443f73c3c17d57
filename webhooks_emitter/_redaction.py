"""Passwords out of text: database URLs, libpq ``key=value`` strings, and the messages that
quote them (a driver's parse error repeats its input whole).

Two passes, because neither is enough alone: the passwords of the inputs a text was made
from are looked up literally (as given and percent-decoded: a driver may quote either), and
anything that *looks like* a password (``scheme://user:...@``, ``password=...``) is hidden
whatever it was made from.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Optional

__all__ = ["hide_passwords", "passwords_in", "scrub_exception"]

# The user info of any URL, up to its last "@" (greedy, within one word): a password
# urllib cannot parse (it holds "/", "?", "#", "@" or an unclosed "[") is hidden whole.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*:(?://)?[^\s:/@\[\]]*:)[^\s]*@")
# ``password=...`` in a libpq key/value string or a URL's query (``sslpassword`` too).
_KEY_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&'\"]+)", re.IGNORECASE)
# The password of a URL as written: what lies between "user:" and the last "@".
_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:(?://)?[^\s:/@\[\]]*:(\S*)@")
# Shorter passwords are hidden by pattern only: replacing every "a" of a message would
# garble it without protecting anything the patterns do not already hide.
_SHORTEST_LOOKED_UP = 3


def passwords_in(source: str) -> set[str]:
    """Every password ``source`` (a URL or a libpq string) holds, as written and decoded."""
    found: set[str] = set()
    match = _USERINFO.match(source.strip())
    if match:
        greedy = match.group(1)
        for secret in (greedy, greedy.partition("@")[0]):
            found.update((secret, urllib.parse.unquote(secret)))
    for match in _KEY_PASSWORD.finditer(source):
        value = match.group(2)
        for secret in (value, value.strip("'"), urllib.parse.unquote(value)):
            found.add(secret)
    return {secret for secret in found if secret}


def hide_passwords(text: str, *sources: Optional[str]) -> str:
    """``text`` with every password it shows replaced by ``***``: those of ``sources`` (as
    given, and percent-decoded) wherever they appear, and any ``scheme://user:password@``
    or ``password=...``."""
    secrets: set[str] = set()
    for source in sources:
        if source:
            secrets |= passwords_in(source)
    # Longest first, so that a password's prefix never leaves the rest of it shown.
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _SHORTEST_LOOKED_UP:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KEY_PASSWORD.sub(r"\1***", text)


def scrub_exception(exc: BaseException, *sources: Optional[str]) -> BaseException:
    """``exc`` (and every exception chained to it) with the passwords of ``sources`` hidden
    in its message; returns ``exc``, changed in place, to be re-raised.

    A chained exception whose text cannot be cleaned (its ``args`` are not all strings) is
    cut from the chain: a traceback would print it whole.
    """
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.args and all(isinstance(arg, str) for arg in current.args):
            current.args = tuple(hide_passwords(arg, *sources) for arg in current.args)
        elif current.args and hide_passwords(str(current), *sources) != str(current):
            current.args = (hide_passwords(str(current), *sources),)
        following = current.__cause__ or current.__context__
        if following is not None and not all(
            isinstance(arg, str) for arg in following.args
        ) and hide_passwords(str(following), *sources) != str(following):
            current.__cause__ = None
            current.__suppress_context__ = True
            break
        current = following
    return exc
