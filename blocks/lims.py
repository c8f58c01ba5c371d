"""LIMS Database block: the connection URL of the facility's LIMS."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from prefect_beamline.lims import Lims


class LimsDatabase(Block):
    """SQLAlchemy URL of an ISPyB-compatible LIMS (MariaDB, PostgreSQL or SQLite).

    Example:
        ```python
        from prefect_beamline.blocks.lims import LimsDatabase

        LimsDatabase(url="sqlite:///lims.db").save("lims")
        lims = LimsDatabase.load("lims").get_lims()
        # flows take it as a parameter: {"lims_block": "lims"}
        ```
    """

    _block_type_name = "LIMS Database"
    _description = "Connection to the ISPyB-compatible LIMS that prefect-beamline writes."

    url: SecretStr = Field(
        description="SQLAlchemy URL, e.g. mysql+pymysql://user:password@host/ispyb"
    )

    def get_lims(self) -> Lims:
        """A live LIMS client for this database."""
        return Lims(self.url.get_secret_value())
