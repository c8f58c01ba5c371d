"""LIMS Database block: where the facility's ISPyB-compatible LIMS lives."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from prefect_beamline.lims import Lims


class LimsDatabase(Block):
    """Connection to an ISPyB-compatible LIMS (MariaDB, PostgreSQL or SQLite).

    The URL is a secret: it usually holds the database password. Flows take the block's
    name as their `lims_block` parameter; without one they use PREFECT_BEAMLINE_LIMS_URL.

    Example:
        ```python
        from prefect_beamline.blocks.lims import LimsDatabase

        LimsDatabase(url="sqlite:///lims.db").save("lims")

        lims = LimsDatabase.load("lims").get_lims()
        lims.create_schema()
        print(lims.jobs_for_collection(42))
        ```
    """

    # Validation errors must not echo the URL: it may hold a password.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "LIMS Database"
    _description = "Connection to the ISPyB-compatible LIMS that prefect-beamline writes."

    url: SecretStr = Field(
        description="SQLAlchemy URL of the LIMS database, e.g. "
        "mysql+pymysql://user:password@host:3306/ispyb, "
        "postgresql+psycopg2://user:password@host:5432/ispyb or sqlite:////data/lims.db",
    )

    @field_validator("url")
    @classmethod
    def _is_a_database_url(cls, url: SecretStr) -> SecretStr:
        try:
            make_url(url.get_secret_value())
        except ArgumentError:
            raise ValueError(
                "url is not an SQLAlchemy database URL "
                "(expected dialect+driver://user:password@host:port/database)"
            ) from None
        return url

    def get_lims(self) -> Lims:
        """A live LIMS client for this database (cheap; shares the connection pool)."""
        return Lims(self.url.get_secret_value())
