"""Who may use the gateway: the DAQ's bearer token (or an HMAC of the raw body) to post
announcements, the operator's token to read the outbox and the detailed health.

Closed by default: `GatewayAccess.from_settings` refuses a configuration that would leave
the DAQ endpoints open, except on a loopback address with the explicit local-development
opt-in. Every comparison runs in constant time. Error messages say what is missing or
wrong, never the expected value.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

from prefect_beamline.settings import BeamlineSettings

SIGNATURE_HEADER = "X-Beamline-Signature"
_SIGNATURE_SCHEME = "sha256="


TOKEN_SETTING = "PREFECT_BEAMLINE_GATEWAY_TOKEN"
SECRET_SETTING = "PREFECT_BEAMLINE_GATEWAY_HMAC_SECRET"
OPERATOR_SETTING = "PREFECT_BEAMLINE_OPERATOR_TOKEN"
LOOPBACK_SETTING = "PREFECT_BEAMLINE_GATEWAY_ALLOW_UNAUTHENTICATED_LOOPBACK"
Role = Literal["daq", "operator"]


class AuthError(Exception):
    """Authentication failed (401); the message says why."""


class Forbidden(AuthError):
    """A valid token of the wrong role (403)."""


class GatewayConfigError(ValueError):
    """The gateway must not start with this configuration; one line naming the setting."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; wildcards and other names are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _configured(value: SecretStr | None, setting: str) -> str | None:
    """The secret, None when unset; an empty or blank one is an error, never `off`."""
    if value is None:
        return None
    secret = value.get_secret_value()
    if not secret.strip():
        raise GatewayConfigError(
            f"{setting} is set but empty: set a real value or unset it (an empty value "
            "never turns authentication off)"
        )
    return secret


def bearer_token(authorization: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, None when there is none."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return None
    return presented.strip()


@dataclass(frozen=True)
class GatewayAccess:
    """Which credentials each kind of endpoint takes, checked once at start."""

    daq_token: str | None
    hmac_secret: str | None
    operator_token: str | None
    open_loopback: bool = False

    @classmethod
    def from_settings(cls, settings: BeamlineSettings, host: str) -> GatewayAccess:
        """Refuse (GatewayConfigError) an empty secret, a DAQ endpoint left open on a
        non-loopback address, or on loopback without the opt-in, and one token for both
        roles."""
        daq_token = _configured(settings.gateway_token, TOKEN_SETTING)
        secret = _configured(settings.gateway_hmac_secret, SECRET_SETTING)
        operator = _configured(settings.operator_token, OPERATOR_SETTING)
        if (
            daq_token is not None
            and operator is not None
            and hmac.compare_digest(daq_token.encode(), operator.encode())
        ):
            raise GatewayConfigError(f"{OPERATOR_SETTING} must differ from {TOKEN_SETTING}")
        loopback = is_loopback(host)
        if daq_token is None and secret is None:
            if not loopback:
                raise GatewayConfigError(
                    f"refusing to serve on {host} without authentication: set {TOKEN_SETTING} "
                    f"(or {SECRET_SETTING})"
                )
            if not settings.gateway_allow_unauthenticated_loopback:
                raise GatewayConfigError(
                    f"refusing to serve without authentication: set {TOKEN_SETTING} (or, for "
                    f"local development on {host} only, {LOOPBACK_SETTING}=true)"
                )
        open_loopback = loopback and settings.gateway_allow_unauthenticated_loopback
        return cls(daq_token, secret, operator, open_loopback)

    @property
    def open_without_tokens(self) -> bool:
        """True when nothing authenticates the DAQ (loopback opt-in only)."""
        return self.daq_token is None and self.hmac_secret is None

    @property
    def operator_open(self) -> bool:
        """Operator endpoints without a token: only on loopback with the opt-in."""
        return self.operator_token is None and self.open_loopback

    def _role(self, authorization: str | None) -> Role | None:
        """Which configured token was presented; both compared in constant time."""
        presented = (bearer_token(authorization) or "").encode()
        is_daq = hmac.compare_digest(presented, (self.daq_token or "").encode())
        is_operator = hmac.compare_digest(presented, (self.operator_token or "").encode())
        if not presented:
            return None
        if is_daq and self.daq_token is not None:
            return "daq"
        if is_operator and self.operator_token is not None:
            return "operator"
        return None

    def check_daq(self, authorization: str | None) -> None:
        """Announcements: the DAQ token when one is set (the signature is checked later)."""
        if self.daq_token is None:
            return
        role = self._role(authorization)
        if role == "daq":
            return
        if role == "operator":
            raise Forbidden("the operator token may not post announcements: send the DAQ token")
        if bearer_token(authorization) is None:
            raise AuthError("missing bearer token: send Authorization: Bearer <token>")
        raise AuthError("invalid bearer token")

    def check_operator(self, authorization: str | None) -> None:
        """Outbox and detailed health: the operator token only."""
        if self.operator_open:
            return
        if self.operator_token is None:
            raise Forbidden(f"operator endpoints are off: set {OPERATOR_SETTING}")
        role = self._role(authorization)
        if role == "operator":
            return
        if role == "daq":
            raise Forbidden(f"the DAQ token may not read this: send the {OPERATOR_SETTING} token")
        if bearer_token(authorization) is None:
            raise AuthError("missing bearer token: send Authorization: Bearer <operator token>")
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
