"""The ePIE/rPIE kernels match the plain numpy reference of tests/ptycho_reference.py."""

from __future__ import annotations

import numpy as np
import pytest
from prefect_beamline.ext.ptycho import (
    add_intensity,
    exit_wave,
    extract_patch,
    modulus_constraint,
    update_object_probe,
)

from prefect_beamline.analysis.ptycho import Reconstruction, epie_iteration, position_order
from tests.ptycho_reference import (
    reference_exit_wave,
    reference_iteration,
    reference_modulus,
    reference_update,
)


def random_complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


@pytest.mark.parametrize("threads", [1, 2])
def test_exit_wave_and_patch_match_numpy(threads: int) -> None:
    rng = np.random.default_rng(0)
    obj, probe = random_complex(rng, (40, 50)), random_complex(rng, (16, 24))
    out = np.empty_like(probe)
    exit_wave(obj, probe, 7, 20, out, n_threads=threads)
    np.testing.assert_allclose(out, reference_exit_wave(obj, probe, 7, 20), rtol=1e-6)
    patch = extract_patch(obj, 24, 26, np.empty_like(probe), n_threads=threads)
    np.testing.assert_array_equal(patch, obj[24:40, 26:50])


def test_add_intensity_accumulates_probe_power() -> None:
    rng = np.random.default_rng(1)
    probe = random_complex(rng, (8, 8))
    total = np.zeros((20, 20), dtype=np.float32)
    add_intensity(total, probe, 2, 3)
    add_intensity(total, probe, 4, 3)
    expected = np.zeros((20, 20))
    expected[2:10, 3:11] += np.abs(probe) ** 2
    expected[4:12, 3:11] += np.abs(probe) ** 2
    np.testing.assert_allclose(total, expected, rtol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_modulus_constraint_matches_numpy_with_mask_and_zeros(threads: int) -> None:
    rng = np.random.default_rng(2)
    wave_ft = random_complex(rng, (32, 32))
    wave_ft[3, 4] = 0  # no phase to keep
    amplitude = rng.uniform(0, 5, (32, 32)).astype(np.float32)
    valid = rng.uniform(size=(32, 32)) > 0.2
    valid[3, 4] = True
    expected, expected_error = reference_modulus(wave_ft.copy(), amplitude, valid)
    error = modulus_constraint(wave_ft, amplitude, valid, n_threads=threads)
    np.testing.assert_allclose(wave_ft, expected, rtol=1e-5, atol=1e-6)
    assert error == pytest.approx(expected_error, rel=1e-5)
    assert wave_ft[3, 4] == pytest.approx(amplitude[3, 4])  # real, measured amplitude


@pytest.mark.parametrize("regularised", [False, True])
@pytest.mark.parametrize("update_probe", [False, True])
def test_object_probe_update_matches_numpy(regularised: bool, update_probe: bool) -> None:
    rng = np.random.default_rng(3)
    obj, probe = random_complex(rng, (30, 30)), random_complex(rng, (12, 12))
    wave, revised = random_complex(rng, (12, 12)), random_complex(rng, (12, 12))
    expected_obj, expected_probe = obj.copy(), probe.copy()
    reference_update(
        expected_obj, expected_probe, 5, 9, wave, revised, 0.7, 0.4, regularised, update_probe
    )
    update_object_probe(
        obj,
        probe,
        5,
        9,
        wave,
        revised,
        alpha=0.7,
        beta=0.4,
        regularised=regularised,
        update_probe=update_probe,
        n_threads=2,
    )
    np.testing.assert_allclose(obj, expected_obj, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probe, expected_probe, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["epie", "rpie"])
def test_one_iteration_matches_the_numpy_reference(algorithm: str) -> None:
    rng = np.random.default_rng(4)
    n, n_positions = 16, 12
    positions = rng.integers(0, 20, (n_positions, 2))
    obj = np.ones((40, 40), dtype=np.complex64) + 0.1 * random_complex(rng, (40, 40))
    probe = random_complex(rng, (n, n))
    amplitudes = rng.uniform(0, 3, (n_positions, n, n)).astype(np.float32)
    valid = rng.uniform(size=(n, n)) > 0.1
    state = Reconstruction(obj.copy(), probe.copy())
    error = epie_iteration(
        state, amplitudes, valid, positions, algorithm=algorithm, alpha=0.5, beta=0.8
    )
    ref_obj, ref_probe = obj.copy(), probe.copy()
    ref_error = reference_iteration(
        ref_obj,
        ref_probe,
        amplitudes,
        valid,
        positions,
        position_order(n_positions, 0),
        alpha=0.5,
        beta=0.8,
        regularised=algorithm == "rpie",
    )
    assert error == pytest.approx(ref_error, rel=1e-4)
    np.testing.assert_allclose(state.obj, ref_obj, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(state.probe, ref_probe, rtol=1e-3, atol=1e-4)
    assert state.iteration == 1 and state.errors == [error]


def test_kernels_refuse_bad_shapes_dtypes_and_out_of_bounds_patches() -> None:
    obj = np.ones((20, 20), dtype=np.complex64)
    probe = np.ones((8, 8), dtype=np.complex64)
    with pytest.raises(ValueError, match="outside the object"):
        exit_wave(obj, probe, 15, 0, np.empty_like(probe))
    with pytest.raises(ValueError, match="complex64"):
        exit_wave(obj.astype(np.complex128), probe, 0, 0, np.empty_like(probe))
    with pytest.raises(ValueError, match="bool"):
        modulus_constraint(probe.copy(), np.ones((8, 8), np.float32), np.ones((8, 8), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        update_object_probe(obj, probe, 0, 0, probe, probe, alpha=0.0, beta=1.0)
