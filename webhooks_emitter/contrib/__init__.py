"""Integrations with web frameworks: :mod:`webhooks_emitter.contrib.flask` and the Django app
:mod:`webhooks_emitter.contrib.django`. Nothing in the core imports them.

This module holds what their receiver decorators share; it imports no framework.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from .. import signing
from .._validate import number
from ..exceptions import InvalidSignatureError

__all__ = ["ReceiverCheck", "SecretSource"]

#: A secret, or a function of no argument returning one (read at each request, e.g.
#: from the application's settings).
SecretSource = Union[signing.SecretType, Callable[[], signing.SecretType]]


class ReceiverCheck:
    """The signature check of the receiver decorators (``verify_webhook``, ``webhook_view``).

    Args:
        secret: the secret (or a list, newest first), or a callable returning it at
            each request.
        scheme: a :mod:`webhooks_emitter.signing` scheme, or its name.
        tolerance: for timestamped schemes, the most seconds the timestamp may be off.
        header_identifier: the ``<identifier>`` of ``X-<identifier>-*`` headers.

    Raises:
        TypeError, ValueError: a bad argument (checked at once, at decoration time).
    """

    def __init__(
        self,
        secret: SecretSource,
        scheme: Union[signing.Scheme, str],
        tolerance: float,
        header_identifier: str,
    ) -> None:
        if isinstance(scheme, str):
            try:
                scheme = signing.SCHEMES[scheme.lower()]
            except KeyError:
                names = ", ".join(sorted(signing.SCHEMES))
                raise ValueError(f"scheme {scheme!r} is unknown (one of: {names})") from None
        if not isinstance(scheme, signing.Scheme):
            raise TypeError(f"scheme must be a webhooks_emitter.signing scheme, not {scheme!r}")
        tolerance = number("tolerance", tolerance, finite=False)
        if not isinstance(header_identifier, str) or not header_identifier:
            raise ValueError(
                f"header_identifier must be a non-empty str, not {header_identifier!r}"
            )
        if not callable(secret):
            scheme.check_secret(secret)
        self.secret = secret
        self.scheme = scheme
        self.tolerance = tolerance
        self.header_identifier = header_identifier

    def __repr__(self) -> str:
        return f"<ReceiverCheck scheme={self.scheme.name!r} tolerance={self.tolerance:g}>"

    def failure(self, body: bytes, headers: Any) -> Optional[str]:
        """Why ``headers`` do not sign ``body``, or None when they do."""
        secret = self.secret() if callable(self.secret) else self.secret
        try:
            self.scheme.verify(
                body,
                headers,
                secret,
                header_identifier=self.header_identifier,
                tolerance=self.tolerance,
            )
        except InvalidSignatureError as exc:
            return str(exc)
        return None
