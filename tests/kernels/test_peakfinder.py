"""The peakfinder8-style kernel finds exactly the peaks of its numpy/scipy reference."""

from __future__ import annotations

import numpy as np
import pytest

from prefect_beamline.ext.peakfinder import PeakFinderParameters, RingMap, find_peaks
from prefect_beamline.techniques.ssx.synth import SerialGeometry, synthetic_frames
from tests.kernels.peakfinder_reference import reference_find_peaks

GEOMETRY = SerialGeometry(shape=(160, 200), beam_centre_px=(97.3, 83.6), detector_distance_mm=30.0)


def frames(n: int, seed: int, hit_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    made = list(synthetic_frames(GEOMETRY, n, hit_fraction=hit_fraction, seed=seed))
    return np.stack([frame for frame, *_ in made]), made[0][3] == 0


def assert_same_peaks(frame: np.ndarray, valid: np.ndarray, params: PeakFinderParameters) -> int:
    bx, by = GEOMETRY.beam_centre_px
    table = find_peaks(frame, RingMap.from_geometry(valid, bx, by), params)
    n_found, expected = reference_find_peaks(frame, valid, bx, by, params)
    assert table.n_peaks[0] == n_found
    got = table.peaks(0)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got[:, 3], expected[:, 3])
    np.testing.assert_allclose(got[:, :3], expected[:, :3], rtol=1e-9, atol=1e-9)
    return n_found


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kernel_peak_list_equals_reference_on_synthetic_frames(seed: int) -> None:
    chunk, valid = frames(4, seed)
    found = [assert_same_peaks(frame, valid, PeakFinderParameters()) for frame in chunk]
    assert max(found) > 10  # the hits hold peaks: the comparison is not of empty lists


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32])
def test_every_dtype_matches_the_reference(dtype: type) -> None:
    chunk, valid = frames(2, 7, hit_fraction=1.0)
    frame = np.minimum(chunk[0], 30_000).astype(dtype)
    assert assert_same_peaks(frame, valid, PeakFinderParameters()) > 10


def test_crafted_frame_edges_mask_overflow_size_and_local_maximum() -> None:
    rng = np.random.default_rng(0)
    frame = rng.poisson(1.0, GEOMETRY.shape).astype(np.uint32)
    valid = np.ones(GEOMETRY.shape, dtype=bool)
    valid[40:44, :] = False
    frame[0:2, 0:2] = 400  # peak in a corner
    frame[158:160, 198:200] = 300  # and the opposite one
    frame[41, 50:53] = 900  # under the mask: ignored
    frame[70, 20] = 2_000  # hot pixel: one pixel, below min_pix
    frame[100:116, 150:166] = 60  # a plateau larger than max_pix
    frame[120, 30:33] = [50, 80, 50]  # a peak ...
    frame[122, 34:36] = 90  # ... beside a brighter one within local_max_radius: not a maximum
    frame[10, 100:103] = np.iinfo(np.uint32).max  # overflow marks: invalid pixels
    params = PeakFinderParameters(max_pix=100, min_res_px=0)
    assert assert_same_peaks(frame, valid, params) >= 2


def test_resolution_limits_and_max_peaks_truncate_like_the_reference() -> None:
    chunk, valid = frames(1, 11, hit_fraction=1.0)
    assert (
        assert_same_peaks(chunk[0], valid, PeakFinderParameters(min_res_px=40, max_res_px=70)) > 0
    )
    assert assert_same_peaks(chunk[0], valid, PeakFinderParameters(max_peaks=3)) > 3


def test_chunk_on_threads_equals_frame_by_frame() -> None:
    chunk, valid = frames(6, 5)
    ring_map = RingMap.from_geometry(valid, *GEOMETRY.beam_centre_px)
    together = find_peaks(chunk, ring_map, n_threads=2)
    for index, frame in enumerate(chunk):
        alone = find_peaks(frame, ring_map, n_threads=1)
        assert alone.n_peaks[0] == together.n_peaks[index]
        np.testing.assert_array_equal(alone.peaks(0), together.peaks(index))


def test_arguments_are_checked_by_name() -> None:
    valid = np.ones((8, 8), dtype=bool)
    ring_map = RingMap.from_geometry(valid, 4.0, 4.0)
    with pytest.raises(ValueError, match="frames must be of dtype uint16, uint32 or int32"):
        find_peaks(np.zeros((8, 8), dtype=np.float64), ring_map)
    with pytest.raises(ValueError, match=r"frames shape \(8, 9\) differs from the ring map's"):
        find_peaks(np.zeros((8, 9), dtype=np.uint16), ring_map)
    with pytest.raises(ValueError, match="max_pix must be at least 5"):
        PeakFinderParameters(min_pix=5, max_pix=4)
