"""The LIMS creates a DataCollection for an announcement without an id (a Bluesky start
whose ISPyB row the gateway makes), on every kind of database."""

from __future__ import annotations

from prefect_beamline.lims import Lims
from tests.helpers import collection_event


def test_created_collections_get_the_next_ids_and_their_metadata(lims: Lims) -> None:
    lims.record_data_collection(collection_event(40))  # one the DAQ numbered itself
    first = lims.create_data_collection(collection_event(1))  # the id sent is ignored
    second = lims.create_data_collection(collection_event(1, data_file="/data/i03/b_master.h5"))
    assert (first, second) == (41, 42)
    created = lims.get_collection(second)
    assert created is not None
    assert created.data_files == ["/data/i03/b_master.h5"]
    assert (created.technique, created.experiment_type, created.image_range) == (
        "mx",
        "rotation",
        (1, 3600),
    )
