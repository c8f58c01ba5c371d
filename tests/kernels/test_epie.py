"""The ePIE/rPIE kernels (`ext/epie.py`) and the plain numpy reference (`epie_reference`).

Twin tests run one body against both engines on crafted waves whose answer is known;
the rest compare the kernel with the reference on random waves, and one iteration of
the technique's driver with the reference's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from prefect_beamline.ext.epie import (
    add_intensity,
    block_fft_pairs,
    epie_positions,
    epie_positions_blocks,
    exit_wave,
    extract_patch,
    modulus_constraint,
    update_object_probe,
)
from prefect_beamline.techniques.ptycho.analysis import (
    Reconstruction,
    epie_iteration,
    position_order,
)
from prefect_beamline.techniques.ptycho.fft import LIBRARIES, plan_block_fft, plan_fft2
from tests.kernels.epie_reference import (
    reference_exit_wave,
    reference_iteration,
    reference_modes_iteration,
    reference_modulus,
    reference_update,
)


def kernel_exit_wave(obj: np.ndarray, probe: np.ndarray, y0: int, x0: int) -> np.ndarray:
    out = np.empty_like(probe)
    exit_wave(obj, probe, y0, x0, out, n_threads=2)
    return out


def kernel_modulus(
    wave_ft: np.ndarray, amplitude: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, float]:
    """The reference's form: the revised wave (the input left alone) and the error."""
    revised = wave_ft.copy()
    return revised, modulus_constraint(revised, amplitude, valid, n_threads=2)


def kernel_update(
    obj: np.ndarray,
    probe: np.ndarray,
    y0: int,
    x0: int,
    exit_wave: np.ndarray,
    revised: np.ndarray,
    alpha: float,
    beta: float,
    regularised: bool,
    update_probe: bool = True,
) -> None:
    update_object_probe(
        obj,
        probe,
        y0,
        x0,
        exit_wave,
        revised,
        alpha=alpha,
        beta=beta,
        regularised=regularised,
        update_probe=update_probe,
        n_threads=2,
    )


# Each step of one scan position by each engine, with the reference's signature.
EXIT_WAVE: dict[str, Callable[..., np.ndarray]] = {
    "reference": reference_exit_wave,
    "kernel": kernel_exit_wave,
}
MODULUS: dict[str, Callable[..., tuple[np.ndarray, float]]] = {
    "reference": reference_modulus,
    "kernel": kernel_modulus,
}
UPDATE: dict[str, Callable[..., None]] = {"reference": reference_update, "kernel": kernel_update}


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


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize(("algorithm", "threads"), [("epie", 1), ("rpie", 2)])
def test_the_fused_pass_matches_the_reference_on_either_fft_library(
    library: str, algorithm: str, threads: int
) -> None:
    rng = np.random.default_rng(7)
    n, n_positions = 24, 15
    positions = rng.integers(0, 30, (n_positions, 2))
    obj = np.ones((60, 60), dtype=np.complex64) + 0.1 * random_complex(rng, (60, 60))
    probe = random_complex(rng, (n, n))
    amplitudes = rng.uniform(0, 3, (n_positions, n, n)).astype(np.float32)
    valid = rng.uniform(size=(n, n)) > 0.1
    valid[0, 0] = True
    amplitudes[:, 0, 0] = 0.0  # a zero far field somewhere: no phase to keep
    order = position_order(n_positions, 3)
    fft = plan_fft2((n, n), threads, library)
    ours_obj, ours_probe = obj.copy(), probe.copy()
    error = epie_positions(
        ours_obj, ours_probe, fft.buffer, fft.forward, fft.backward, amplitudes, valid,
        positions, order, alpha=0.6, beta=0.9, regularised=algorithm == "rpie",
        n_threads=threads,
    )  # fmt: skip
    ref_obj, ref_probe = obj.copy(), probe.copy()
    ref_error = reference_iteration(
        ref_obj, ref_probe, amplitudes, valid, positions, order, alpha=0.6, beta=0.9,
        regularised=algorithm == "rpie",
    )  # fmt: skip
    measured = float(np.sum((amplitudes**2)[:, valid]))
    assert error / measured == pytest.approx(ref_error, rel=1e-4)
    np.testing.assert_allclose(ours_obj, ref_obj, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours_probe, ref_probe, rtol=1e-3, atol=1e-4)


def _block_case(
    seed: int, shape: tuple[int, int], modes: int, n_positions: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(object, probes (modes, ny, nx), amplitudes, valid, order): random, with a zero
    far field at one valid pixel (no phase to keep)."""
    rng = np.random.default_rng(seed)
    obj = np.ones((60, 64), dtype=np.complex64) + 0.1 * random_complex(rng, (60, 64))
    probes = random_complex(rng, (modes, *shape)) / np.float32(np.sqrt(modes))
    amplitudes = rng.uniform(0, 3, (n_positions, *shape)).astype(np.float32)
    valid = rng.uniform(size=shape) > 0.1
    valid[0, 0] = True
    amplitudes[:, 0, 0] = 0.0
    return obj, probes, amplitudes, valid, position_order(n_positions, 2)


# (ny, nx): in blocks of 8 rows and 8 columns, sizes that divide evenly (aligned plans);
# rows and columns with a narrower last block, and rows whose 20 (+8 padding) complex64
# are not a multiple of 64 bytes (unaligned plans).
BLOCK_SHAPES = [(24, 16), (20, 24), (24, 20)]


@pytest.mark.parametrize("shape", BLOCK_SHAPES)
@pytest.mark.parametrize(("algorithm", "threads"), [("epie", 1), ("rpie", 2)])
def test_the_block_pass_matches_the_reference_with_one_mode(
    shape: tuple[int, int], algorithm: str, threads: int
) -> None:
    obj, probes, amplitudes, valid, order = _block_case(9, shape, 1)
    positions = np.random.default_rng(1).integers(0, 30, (len(amplitudes), 2))
    ours_obj, ours_probes = obj.copy(), probes.copy()
    fft = plan_block_fft(shape, rows=8, cols=8)  # narrower last blocks both ways
    error = epie_positions_blocks(
        ours_obj, ours_probes, fft, amplitudes, valid, positions, order, alpha=0.6, beta=0.9,
        regularised=algorithm == "rpie", n_threads=threads,
    )  # fmt: skip
    ref_obj, ref_probe = obj.copy(), probes[0].copy()
    ref_error = reference_iteration(
        ref_obj, ref_probe, amplitudes, valid, positions, order, alpha=0.6, beta=0.9,
        regularised=algorithm == "rpie",
    )  # fmt: skip
    assert error / float(np.sum((amplitudes**2)[:, valid])) == pytest.approx(ref_error, rel=1e-4)
    np.testing.assert_allclose(ours_obj, ref_obj, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours_probes[0], ref_probe, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("shape", "modes"), [((24, 16), 3), ((20, 24), 2)])
@pytest.mark.parametrize(("algorithm", "threads"), [("epie", 1), ("rpie", 2)])
@pytest.mark.parametrize("subpixel", [False, True])
def test_probe_modes_and_subpixel_positions_match_the_reference(
    shape: tuple[int, int], modes: int, algorithm: str, threads: int, subpixel: bool
) -> None:
    obj, probes, amplitudes, valid, order = _block_case(11, shape, modes)
    rng = np.random.default_rng(3)
    positions = rng.uniform(0, 30, (len(amplitudes), 2))
    if not subpixel:
        positions = np.rint(positions).astype(np.int64)
    ours_obj, ours_probes = obj.copy(), probes.copy()
    fft = plan_block_fft(shape, modes)
    error = epie_positions_blocks(
        ours_obj, ours_probes, fft, amplitudes, valid, positions, order, alpha=0.6, beta=0.9,
        regularised=algorithm == "rpie", n_threads=threads,
    )  # fmt: skip
    ref_obj, ref_probes = obj.copy(), probes.copy()
    ref_error = reference_modes_iteration(
        ref_obj, ref_probes, amplitudes, valid, positions, order, alpha=0.6, beta=0.9,
        regularised=algorithm == "rpie",
    )  # fmt: skip
    assert error / float(np.sum((amplitudes**2)[:, valid])) == pytest.approx(ref_error, rel=1e-4)
    np.testing.assert_allclose(ours_obj, ref_obj, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours_probes, ref_probes, rtol=1e-3, atol=1e-4)


def test_one_mode_at_half_a_pixel_sees_the_average_of_two_pixels() -> None:
    """A known answer for the interpolation: an object of columns 0, 1, 0, 1, ... under a
    patch half a pixel right is 0.5 everywhere, so a probe of ones sends the flat wave's
    whole power to the zero frequency; the error against that measured is zero."""
    n = 16
    obj = np.ascontiguousarray(np.tile(np.array([0, 1], np.complex64), (n + 1, n))[:, : n + 1])
    probes = np.ones((1, n, n), np.complex64)
    amplitudes = np.zeros((1, n, n), np.float32)
    amplitudes[0, 0, 0] = 0.5 * n  # |FFT_ortho(0.5)| at the zero frequency
    valid = np.ones((n, n), bool)
    before = obj.copy()
    error = epie_positions_blocks(
        obj, probes, plan_block_fft((n, n)), amplitudes, valid, np.array([[0.0, 0.5]]),
        np.array([0]), alpha=1.0, beta=1.0,
    )  # fmt: skip
    assert error == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(obj, before, atol=1e-6)
    with pytest.raises(ValueError, match="falls outside the object"):
        epie_positions_blocks(
            obj[:n, :n].copy(), probes, plan_block_fft((n, n)), amplitudes, valid,
            np.array([[0.0, 0.5]]), np.array([0]), alpha=1.0, beta=1.0,
        )  # fmt: skip


@pytest.mark.parametrize("shape", BLOCK_SHAPES)
def test_the_block_plans_are_a_2d_fft_and_its_unnormalised_inverse(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(12)
    waves = random_complex(rng, (2, *shape))
    fft = plan_block_fft(shape, modes=2, rows=8, cols=8)
    fft.buffer[:, :, : shape[1]] = waves
    block_fft_pairs(fft, shape[1], 1)
    np.testing.assert_allclose(
        fft.buffer[:, :, : shape[1]], waves * waves[0].size, rtol=1e-4, atol=1e-3
    )


def test_the_fft_plans_are_unnormalised_inverses_of_each_other() -> None:
    rng = np.random.default_rng(8)
    wave = random_complex(rng, (16, 20))
    for library in LIBRARIES:
        fft = plan_fft2(wave.shape, 1, library)
        fft.buffer[...] = wave
        fft.forward()
        np.testing.assert_allclose(fft.buffer, np.fft.fft2(wave), rtol=1e-4, atol=1e-4)
        fft.backward()
        np.testing.assert_allclose(fft.buffer, wave * wave.size, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="library must be one of"):
        plan_fft2((8, 8), 1, "numpy")


@pytest.mark.parametrize("engine", EXIT_WAVE)
def test_the_exit_wave_is_probe_times_the_patch_under_it(engine: str) -> None:
    obj = np.zeros((20, 24), dtype=np.complex64)
    obj[5:13, 9:17] = 1 + 1j  # the patch under an 8 x 8 probe at (5, 9)
    probe = np.full((8, 8), 2 - 1j, dtype=np.complex64)
    np.testing.assert_array_equal(EXIT_WAVE[engine](obj, probe, 5, 9), np.full((8, 8), 3 + 1j))
    lower = EXIT_WAVE[engine](obj, probe, 12, 9)  # only its first row is over the patch
    np.testing.assert_array_equal(lower[0], np.full(8, 3 + 1j))
    assert not lower[1:].any()


@pytest.mark.parametrize("engine", MODULUS)
def test_the_modulus_is_replaced_the_phase_kept_and_masked_pixels_left(engine: str) -> None:
    wave_ft = np.full((6, 6), 3 + 4j, dtype=np.complex64)  # |Ψ| = 5
    wave_ft[1, 1] = 0  # no phase to keep
    amplitude = np.full((6, 6), 10.0, dtype=np.float32)
    valid = np.ones((6, 6), dtype=bool)
    valid[0, 0] = False
    revised, error = MODULUS[engine](wave_ft, amplitude, valid)
    expected = np.full((6, 6), 6 + 8j)
    expected[1, 1] = 10.0  # a real field of the measured amplitude
    expected[0, 0] = 3 + 4j  # masked: the current estimate
    np.testing.assert_allclose(revised, expected, rtol=1e-6)
    assert error == pytest.approx(34 * (5.0 - 10.0) ** 2 + 10.0**2)


@pytest.mark.parametrize("engine", UPDATE)
@pytest.mark.parametrize("regularised", [False, True])
def test_no_change_of_the_exit_wave_changes_nothing(engine: str, regularised: bool) -> None:
    rng = np.random.default_rng(5)
    obj, probe = random_complex(rng, (20, 20)), random_complex(rng, (8, 8))
    wave = random_complex(rng, (8, 8))
    before_obj, before_probe = obj.copy(), probe.copy()
    UPDATE[engine](obj, probe, 3, 4, wave, wave.copy(), 0.7, 0.4, regularised)
    np.testing.assert_array_equal(obj, before_obj)
    np.testing.assert_array_equal(probe, before_probe)


@pytest.mark.parametrize("engine", UPDATE)
@pytest.mark.parametrize(
    ("regularised", "new_object", "new_probe"),
    [
        # ePIE: O += α P* Δ / max|P|², P += β O* Δ / max|O|², all maxima 1.
        (False, 1 + 0.5 * (0.5 + 0.5j), 1 + 0.25 * (0.5 + 0.5j)),
        # rPIE: the weights 1 / ((1 − α)|P|² + α max|P|²) are 1 when |P| = max|P| = 1.
        (True, 1.5 + 0.5j, 1.5 + 0.5j),
    ],
)
def test_a_uniform_update_has_the_known_step(
    engine: str, regularised: bool, new_object: complex, new_probe: complex
) -> None:
    obj = np.ones((12, 12), dtype=np.complex64)
    probe = np.ones((4, 4), dtype=np.complex64)
    wave = np.zeros((4, 4), dtype=np.complex64)
    revised = np.full((4, 4), 0.5 + 0.5j, dtype=np.complex64)  # Δ = revised − exit wave
    UPDATE[engine](obj, probe, 2, 6, wave, revised, 0.5, 0.25, regularised)
    expected_obj = np.ones((12, 12), dtype=np.complex128)
    expected_obj[2:6, 6:10] = new_object
    np.testing.assert_allclose(obj, expected_obj, rtol=1e-6)
    np.testing.assert_allclose(probe, np.full((4, 4), new_probe), rtol=1e-6)


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


OBJ = np.ones((20, 20), dtype=np.complex64)
PROBE = np.ones((8, 8), dtype=np.complex64)


# Each bad argument with the message naming it: checked by
# tests/kernels/test_arguments.py::test_every_face_checks_and_names_each_argument.
REJECTED_ARGUMENTS: list[tuple[Callable[[], object], str]] = [
    (
        lambda: exit_wave(OBJ, PROBE, 0, 0, np.empty((8, 7), np.complex64)),
        r"out shape \(8, 7\) differs from probe shape \(8, 8\)",
    ),
    (
        lambda: exit_wave(OBJ[None], PROBE, 0, 0, np.empty_like(PROBE)),
        r"obj must be 2-D, got shape \(1, 20, 20\)",
    ),
    (
        lambda: exit_wave(OBJ, np.ones((16, 16), np.complex64)[::2, ::2], 0, 0, PROBE.copy()),
        r"probe must be C-contiguous",
    ),
    (
        lambda: exit_wave(OBJ, PROBE, -1, 0, np.empty_like(PROBE)),
        r"patch 8x8 at \(y0=-1, x0=0\) falls outside the object \(20, 20\)",
    ),
    (
        lambda: extract_patch(OBJ, 0, 13, np.empty_like(PROBE)),
        r"patch 8x8 at \(y0=0, x0=13\) falls outside the object \(20, 20\)",
    ),
    (
        lambda: extract_patch(OBJ, 0, 0, np.empty((8, 8), np.complex128)),
        r"out must be of dtype complex64, got complex128",
    ),
    (
        lambda: add_intensity(np.zeros((20, 20)), PROBE, 0, 0),
        r"total must be of dtype float32, got float64",
    ),
    (
        lambda: add_intensity(np.zeros((6, 20), np.float32), PROBE, 0, 0),
        r"patch 8x8 at \(y0=0, x0=0\) falls outside the total \(6, 20\)",
    ),
    (
        lambda: modulus_constraint(PROBE.copy(), np.ones((8, 8)), np.ones((8, 8), bool)),
        r"amplitude must be of dtype float32, got float64",
    ),
    (
        lambda: modulus_constraint(
            PROBE.copy(), np.ones((8, 6), np.float32), np.ones((8, 8), bool)
        ),
        r"amplitude shape \(8, 6\) differs from wave_ft shape \(8, 8\)",
    ),
    (
        lambda: modulus_constraint(
            PROBE.copy(), np.ones((8, 8), np.float32), np.ones((6, 8), bool)
        ),
        r"valid shape \(6, 8\) differs from wave_ft shape \(8, 8\)",
    ),
    (
        lambda: update_object_probe(
            OBJ.copy(), PROBE.copy(), 0, 0, PROBE[:4], PROBE, alpha=1.0, beta=1.0
        ),
        r"exit_wave shape \(4, 8\) differs from probe shape \(8, 8\)",
    ),
    (
        lambda: update_object_probe(
            OBJ.copy(), PROBE.copy(), 0, 0, PROBE, PROBE, alpha=0.5, beta=1.5
        ),
        r"alpha must be in \(0, 1\] and beta in \[0, 1\], got 0.5, 1.5",
    ),
    (
        lambda: update_object_probe(
            OBJ.copy(), PROBE.copy(), 0, 0, PROBE, PROBE, alpha=float("nan"), beta=1.0
        ),
        r"alpha must be finite, got nan",
    ),
    (
        lambda: update_object_probe(
            OBJ.copy(),
            PROBE.copy(),
            0,
            0,
            PROBE,
            PROBE,
            alpha=1.0,
            beta=1.0,
            probe_max=-1.0,
            object_max=1.0,
        ),
        r"probe_max must be at least 0.0, got -1.0",
    ),
    (
        lambda: extract_patch(OBJ, 0, 0, np.empty_like(PROBE), n_threads=-4),
        r"n_threads must be at least 0, got -4",
    ),
]


FFT8 = plan_fft2((8, 8), 1, "scipy")
AMPLITUDES = np.ones((3, 8, 8), np.float32)
VALID = np.ones((8, 8), bool)


def _pass(**changed: object) -> float:
    """epie_positions on a small valid scan, with `changed` arguments."""
    arguments: dict[str, object] = {
        "obj": OBJ.copy(),
        "probe": PROBE.copy(),
        "wave": FFT8.buffer,
        "forward": FFT8.forward,
        "backward": FFT8.backward,
        "amplitudes": AMPLITUDES,
        "valid": VALID,
        "positions": np.array([[0, 0], [4, 4], [12, 12]]),
        "order": np.arange(3),
        "alpha": 1.0,
        "beta": 1.0,
    }
    arguments.update(changed)
    return epie_positions(**arguments)  # type: ignore[arg-type]


REJECTED_ARGUMENTS += [
    (
        lambda: _pass(positions=np.array([[0, 0], [4, 4], [12, 13]])),
        r"positions: a 8x8 patch at corners from \[0, 0\] to \[12, 13\] falls outside "
        r"the object \(20, 20\)",
    ),
    (
        lambda: _pass(positions=np.array([[0, 0], [4, 4]])),
        r"positions shape \(2, 2\) differs from amplitudes' \(position, 2\) shape \(3, 2\)",
    ),
    (lambda: _pass(order=np.array([0, 3])), r"order must index the 3 positions, got 0..3"),
    (
        lambda: _pass(wave=np.zeros((8, 6), np.complex64)),
        r"wave shape \(8, 6\) differs from probe shape \(8, 8\)",
    ),
    (
        lambda: _pass(amplitudes=np.ones((3, 8, 6), np.float32)),
        r"amplitudes shape \(3, 8, 6\) differs from probe shape \(3, 8, 8\)",
    ),
    (lambda: _pass(alpha=0.0), r"alpha must be in \(0, 1\] and beta in \[0, 1\], got 0.0, 1.0"),
]


def test_a_fractional_position_is_refused() -> None:
    with pytest.raises(TypeError, match="y0 must be an integer, got 1.5"):
        extract_patch(OBJ, 1.5, 0, np.empty_like(PROBE))


@pytest.mark.parametrize("n_threads", [None, 0])
def test_none_or_zero_threads_use_every_core_and_give_the_same_wave(
    n_threads: int | None,
) -> None:
    rng = np.random.default_rng(6)
    obj, probe = random_complex(rng, (40, 50)), random_complex(rng, (16, 24))
    many, one = np.empty_like(probe), np.empty_like(probe)
    assert exit_wave(obj, probe, 7, 20, many, n_threads=n_threads) == exit_wave(
        obj, probe, 7, 20, one, n_threads=1
    )
    np.testing.assert_array_equal(many, one)
