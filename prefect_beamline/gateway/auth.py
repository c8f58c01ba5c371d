"""Who may post to the gateway: a bearer token, and optionally an HMAC of the raw body.

Both comparisons run in constant time. Error messages say what is missing or wrong, never
the expected value.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Beamline-Signature"
_SIGNATURE_SCHEME = "sha256="


class AuthError(Exception):
    """Authentication failed; the message says why."""


def check_token(authorization: str | None, token: str | None) -> None:
    """Require `Authorization: Bearer <token>` when a token is configured."""
    if token is None:
        return
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise AuthError("missing bearer token: send Authorization: Bearer <token>")
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise AuthError("invalid bearer token")


def body_signature(body: bytes, secret: str) -> str:
    """The header value a DAQ sends: `sha256=<hex HMAC-SHA256 of the raw body>`."""
    return _SIGNATURE_SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_signature(header: str | None, body: bytes, secret: str | None) -> None:
    """Require a signature of exactly these body bytes when a secret is configured."""
    if secret is None:
        return
    if not header:
        raise AuthError(f"missing {SIGNATURE_HEADER} header: send sha256=<hex HMAC of the body>")
    presented = header.strip()
    if not presented.lower().startswith(_SIGNATURE_SCHEME):
        raise AuthError(f"{SIGNATURE_HEADER} must be sha256=<hex HMAC-SHA256 of the body>")
    presented = _SIGNATURE_SCHEME + presented[len(_SIGNATURE_SCHEME) :].lower()
    if not hmac.compare_digest(presented.encode(), body_signature(body, secret).encode()):
        raise AuthError(f"{SIGNATURE_HEADER} does not match the body")
