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

    worker_poll_seconds: float = Field(
        0.25,
        gt=0,
        description="How often the beamline worker asks its work pool for flow runs "
        "(Prefect's process worker: PREFECT_WORKER_QUERY_SECONDS, 10 s)",
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
