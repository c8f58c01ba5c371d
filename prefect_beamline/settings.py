"""Settings read from the environment (prefix `PREFECT_BEAMLINE_`), with embedded defaults.

Out of the box everything lives under `~/.prefect-beamline`: a SQLite LIMS and a SQLite
gateway outbox. Production points the URLs at MariaDB/PostgreSQL.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BeamlineSettings(BaseSettings):
    """Where prefect-beamline keeps its state and how the gateway authenticates."""

    model_config = SettingsConfigDict(env_prefix="PREFECT_BEAMLINE_", extra="ignore")

    home: Path = Field(
        Path.home() / ".prefect-beamline", description="Folder for the embedded databases"
    )
    lims_url: str | None = Field(
        None, description="SQLAlchemy URL of the LIMS; default: SQLite file in `home`"
    )
    outbox_url: str | None = Field(
        None, description="SQLAlchemy URL of the gateway outbox; default: SQLite in `home`"
    )
    gateway_token: SecretStr | None = Field(
        None, description="Bearer token the DAQ must send; None disables token checks"
    )
    gateway_hmac_secret: SecretStr | None = Field(
        None, description="When set, requests must carry X-Beamline-Signature: sha256=<hex>"
    )
    gateway_max_body_bytes: int = Field(1_048_576, description="Largest accepted request body")
    gateway_host: str = Field("127.0.0.1", description="Address the gateway binds")
    gateway_port: int = Field(8787, description="Port the gateway listens on")
    compute_block: str | None = Field(
        None,
        description="Name of the Beamline Compute block flows run their chunks on; "
        "empty: local threads",
    )

    zombie_after_seconds: int = Field(
        90,
        ge=10,
        description="A running flow run without a heartbeat for this long is marked "
        "crashed (more than PREFECT_FLOWS_HEARTBEAT_FREQUENCY)",
    )
    crash_retries: int = Field(
        2, ge=0, description="Times a crashed flow run is started again before giving up"
    )
    recovery_seconds: float = Field(
        15.0, gt=0, description="How often `serve` looks for crashed runs and open LIMS jobs"
    )

    @cached_property
    def resolved_lims_url(self) -> str:
        return self.lims_url or f"sqlite:///{self.home / 'lims.db'}"

    @cached_property
    def resolved_outbox_url(self) -> str:
        return self.outbox_url or f"sqlite:///{self.home / 'gateway.db'}"


def get_settings() -> BeamlineSettings:
    """Fresh settings from the current environment (cheap; tests change the environment)."""
    settings = BeamlineSettings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings
