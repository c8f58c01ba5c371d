"""The LIMS Database block without a Prefect server: it builds a working Lims client."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from prefect_beamline.blocks.lims import LimsDatabase
from prefect_beamline.lims import Lims
from tests.helpers import MASTER, collection_event


def test_block_gives_a_working_lims(tmp_path: Path) -> None:
    lims = LimsDatabase(url=f"sqlite:///{tmp_path / 'block.db'}").get_lims()
    assert isinstance(lims, Lims)
    lims.create_schema()
    lims.record_data_collection(collection_event(1))
    described = LimsDatabase(url=f"sqlite:///{tmp_path / 'block.db'}").get_lims().get_collection(1)
    assert described is not None and described.data_files == [MASTER]
    lims.close()


def test_password_in_the_url_stays_secret() -> None:
    block = LimsDatabase(url="mysql+pymysql://ispyb:hunter2@db.example/ispyb")
    assert "hunter2" not in repr(block)
    assert "hunter2" not in str(block.model_dump())
    assert "hunter2" not in repr(block.get_lims())


def test_url_that_is_not_a_database_url_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValidationError, match="not an SQLAlchemy database URL") as raised:
        LimsDatabase(url="hunter2 is not a url")
    assert "hunter2" not in str(raised.value)


def test_block_type_is_named_and_documented() -> None:
    assert LimsDatabase.get_block_type_name() == "LIMS Database"
    assert LimsDatabase.get_block_type_slug() == "lims-database"
    assert LimsDatabase.model_fields["url"].description
    assert 'LimsDatabase(url="sqlite:///lims.db").save("lims")' in (LimsDatabase.__doc__ or "")
    assert 'LimsDatabase.load("lims").get_lims()' in (LimsDatabase.__doc__ or "")
