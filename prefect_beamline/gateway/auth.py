"""Who may post to the gateway: a bearer token, and optionally an HMAC of the body."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Beamline-Signature"


class AuthError(Exception):
    """Authentication failed; the message says why (never the expected secret)."""


def check_token(authorization: str | None, token: str | None) -> None:
    """Require `Authorization: Bearer <token>` when a token is configured."""
    if token is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise AuthError("invalid bearer token")


def body_signature(body: bytes, secret: str) -> str:
    """The header value a DAQ sends: `sha256=<hex HMAC-SHA256 of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_signature(header: str | None, body: bytes, secret: str | None) -> None:
    """Require a matching body signature when a secret is configured."""
    if secret is None:
        return
    if not header:
        raise AuthError(f"missing {SIGNATURE_HEADER} header (sha256=<hex HMAC of the body>)")
    if not hmac.compare_digest(header.strip(), body_signature(body, secret)):
        raise AuthError(f"{SIGNATURE_HEADER} does not match the body")
