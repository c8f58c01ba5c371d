"""Settings read from the environment (prefix `PREFECT_BEAMLINE_`), with embedded defaults.

Out of the box everything lives under `~/.prefect-beamline`: a SQLite LIMS and a SQLite
gateway outbox. Production points the URLs at MariaDB/PostgreSQL.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from prefect_beamline.data_roots import parse_data_roots


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
        None,
        description="Bearer token the DAQ sends to post announcements; required (or the "
        "HMAC secret) unless unauthenticated loopback is allowed; empty is an error",
    )
    operator_token: SecretStr | None = Field(
        None,
        description="Bearer token for the operator endpoints (outbox listing, detailed "
        "health); unset: they are refused",
    )
    gateway_allow_unauthenticated_loopback: bool = Field(
        False,
        description="Local development only: a gateway bound to a loopback address may run "
        "without tokens (a token that is set is still required)",
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders data files must lie under (os.pathsep-separated like PATH, "
        "or a JSON list); unset: every file-bearing announcement is refused",
    )
    gateway_hmac_secret: SecretStr | None = Field(
        None, description="When set, requests must carry X-Beamline-Signature: sha256=<hex>"
    )
    gateway_max_body_bytes: int = Field(1_048_576, description="Largest accepted request body")
    gateway_host: str = Field("127.0.0.1", description="Address the gateway binds")
    gateway_port: int = Field(8787, description="Port the gateway listens on")
    metrics_port: int | None = Field(
        None,
        description="Port on which `prefect-beamline serve` exposes Prometheus metrics; "
        "None: no endpoint",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the metrics endpoint of `serve` binds"
    )
    compute_block: str | None = Field(
        None,
        description="Name of the Beamline Compute block flows run their chunks on; "
        "empty: local threads",
    )
    outbox_max_attempts: int = Field(
        10,
        ge=1,
        description="Attempts of an event Prefect refuses (or that cannot be built) before "
        "it is dead-lettered as `failed`; Prefect being down counts no attempt",
    )
    outbox_retention_hours: float = Field(
        168.0,
        gt=0,
        description="Emitted and skipped events (raw bodies too) are deleted this long after; "
        "dead letters stay until discarded. Also the window in which a replayed id is a duplicate",
    )
    outbox_max_pending: int = Field(
        100_000,
        ge=1,
        description="Most events waiting for Prefect; past it the gateway answers 503 with "
        "Retry-After instead of growing the outbox",
    )

    @field_validator("data_roots", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> list[Path]:
        return parse_data_roots(value)

    crash_recovery: bool = Field(
        True,
        description="`serve` registers the zombie automation and retries crashed runs; the "
        "demo turns it off on a server it does not own (a facility's automations are theirs)",
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

    worker_poll_seconds: float = Field(
        0.25,
        gt=0,
        description="How often the beamline worker asks its work pool for flow runs "
        "(Prefect's process worker: PREFECT_WORKER_QUERY_SECONDS, 10 s)",
    )
    max_frame_pixels: int = Field(
        18_100_000,
        ge=1,
        description="Pixels of the largest detector frame this runner processes (EIGER2 16M: "
        "18.1 M); with the memory fraction, bounds how many collection runs `serve` holds",
    )
    run_memory_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of the machine's available memory (at `serve` start) that "
        "concurrent collection runs may hold",
    )
    runs_per_core: int = Field(
        4,
        ge=1,
        description="Collection runs `serve` holds at once per CPU core: a run waits on the "
        "Prefect server and the LIMS much of its life, so a few per core keep the cores "
        "busy, and many more only make them contend",
    )

    # The Zocalo bridge (`prefect-beamline zocalo-bridge`, docs/zocalo.md).
    zocalo_rabbitmq_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RabbitMQ the Zocalo bridge consumes from and publishes results to "
        "(amqp://user:password@host:port/vhost)",
    )
    zocalo_recipe_queue: str = Field(
        "processing_recipe", description="Queue of Zocalo trigger messages (dodal, zocalo.go)"
    )
    zocalo_recipes: dict[str, str] = Field(
        default_factory=lambda: {"mimas": "automatic"},
        description="Routing table (Zocalo's Mimas): recipe -> `automatic` (the triggers "
        "of prefect.yaml decide) or a deployment `flow-name/deployment-name`; a recipe "
        "named like a deployment routes to it without an entry. JSON in the environment",
    )
    zocalo_xrc_queue: str = Field(
        "xrc.{beamline}",
        description="Queue dodal's ZocaloResults reads grid-scan results from "
        "({beamline} is replaced; dodal's default channel is xrc.i03)",
    )
    zocalo_xrc_beamlines: list[str] = Field(
        default_factory=list,
        description="Beamlines whose grid-scan X-ray centres the MX flow publishes on "
        "RabbitMQ for dodal's ZocaloResults (JSON list); empty: none",
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
