"""Bearer token authentication: API tokens, and the sender tokens PACSs STOW-RS with."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from node.config import ApiSettings
from node.http.errors import ApiError

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from api.tokens or AINODE_API_TOKEN; "
    "/dicom-web also takes a source's sender token (sources.<name>.api_tokens)",
)

NO_TOKEN_MESSAGE = (
    "API authentication is on but no token is configured: add one under api.tokens in the "
    "configuration file or set the AINODE_API_TOKEN environment variable, then send "
    "'Authorization: Bearer <token>'. For local use only, set api.auth_disabled: true."
)


def bearer_auth(
    api: ApiSettings, tokens: tuple[str, ...], sender_tokens: Mapping[str, str] | None = None
) -> Callable[..., str | None]:
    """A dependency that checks ``Authorization: Bearer <token>`` in constant time.

    Parameters
    ----------
    api : ApiSettings
        ``auth_disabled`` turns the check off (no sender is then known).
    tokens : tuple of str
        The API tokens.
    sender_tokens : mapping of str to str, optional
        ``token -> source name`` for the tokens PACSs send STOW-RS with; given
        only where they are accepted (``/dicom-web``), never for the REST API.

    Returns
    -------
    callable
        The dependency; it returns the name of the source whose sender token
        was presented, else ``None`` (an API token, or authentication off).
    """
    accepted: list[tuple[bytes, str | None]] = [(t.encode("utf-8"), None) for t in tokens]
    accepted += [(t.encode("utf-8"), name) for t, name in (sender_tokens or {}).items()]

    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str | None:
        if api.auth_disabled:
            return None
        if not accepted:
            raise ApiError(503, "auth_not_configured", NO_TOKEN_MESSAGE)
        challenge = {"WWW-Authenticate": 'Bearer realm="ainode"'}
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'", challenge)
        given = credentials.credentials.encode("utf-8")
        matched, sender = False, None
        for token, name in accepted:  # every token is compared: the time does not say which matched
            if hmac.compare_digest(given, token):
                matched, sender = True, name
        if not matched:
            raise ApiError(401, "unauthorized", "the API token is not valid", challenge)
        return sender

    return check
