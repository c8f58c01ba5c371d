"""The azimuthal integrator: its matrix and product equal the plain references, and its
profiles equal pyFAI's for the same geometry, bins and corrections."""

from __future__ import annotations

import numpy as np
import pytest

from prefect_beamline.ext.azimint import AzimuthalIntegrator, DetectorGeometry
from tests.kernels.azimint_reference import reference_integrate, reference_matrix

SMALL = DetectorGeometry(
    shape=(24, 30),
    distance_mm=20.0,
    beam_centre_x_px=11.3,
    beam_centre_y_px=9.8,
    pixel_size_x_mm=0.075,
    pixel_size_y_mm=0.075,
    wavelength_angstrom=1.0,
)
# Tolerance against pyFAI, relative, every bin: float32 coefficients and positions
# computed in another order differ in the last bits (measured: 1e-6 mean, 2e-6 sigma).
PYFAI_RTOL = 1e-5


def small_mask() -> np.ndarray:
    valid = np.ones(SMALL.shape, dtype=bool)
    valid[5, 3:9] = False
    return valid


@pytest.mark.parametrize("unit", ["q_nm^-1", "2th_deg"])
@pytest.mark.parametrize("polarization", [0.99, None])
def test_matrix_equals_the_pixel_by_pixel_reference(unit: str, polarization: float | None) -> None:
    valid = small_mask()
    integrator = AzimuthalIntegrator.build(
        SMALL, valid, 40, unit=unit, polarization_factor=polarization
    )
    matrix, norm, radial = reference_matrix(SMALL, valid, 40, unit, polarization)
    dense = np.asarray(integrator.matrix().toarray())  # type: ignore[attr-defined]
    np.testing.assert_allclose(dense, matrix, rtol=2e-7, atol=1e-7)
    np.testing.assert_allclose(integrator.norm, norm, rtol=1e-7)
    np.testing.assert_allclose(integrator.radial, radial, rtol=1e-12)
    assert (dense.sum(axis=1)[valid.ravel()] > 0.999).all()  # every valid pixel counts once


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.float32])
def test_integration_equals_the_dense_reference_with_invalid_pixels(dtype: type) -> None:
    valid = small_mask()
    integrator = AzimuthalIntegrator.build(SMALL, valid, 40)
    frame = np.random.default_rng(1).poisson(50.0, SMALL.shape).astype(dtype)
    invalid: float | None = None
    if np.dtype(dtype).kind == "f":
        frame[2, 2] = np.nan
    else:
        frame[2, 2] = np.iinfo(dtype).max
        invalid = float(np.iinfo(dtype).max)
    profile = integrator.integrate(frame)
    matrix, norm, _ = reference_matrix(SMALL, valid, 40)
    mean, sigma = reference_integrate(frame, matrix, norm.astype(np.float32), invalid)
    np.testing.assert_allclose(profile.intensity[0], mean, rtol=1e-6)
    np.testing.assert_allclose(profile.sigma[0], sigma, rtol=1e-6)


def test_threads_and_chunks_give_the_single_thread_result() -> None:
    integrator = AzimuthalIntegrator.build(SMALL, small_mask(), 40)
    chunk = np.random.default_rng(2).poisson(20.0, (3, *SMALL.shape)).astype(np.uint32)
    one = integrator.integrate(chunk, n_threads=1)
    three = integrator.integrate(chunk, n_threads=3)
    np.testing.assert_allclose(three.intensity, one.intensity, rtol=1e-12)
    for index, frame in enumerate(chunk):
        alone = integrator.integrate(frame)
        np.testing.assert_allclose(alone.intensity[0], one.intensity[index], rtol=1e-12)


def pyfai_integrator(geometry: DetectorGeometry) -> object:
    """The same geometry through pyFAI's own API: PONI from the beam centre, no rotation."""
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator as PyFAIIntegrator

    return PyFAIIntegrator(
        dist=geometry.distance_mm * 1e-3,
        poni1=geometry.beam_centre_y_px * geometry.pixel_size_y_mm * 1e-3,
        poni2=geometry.beam_centre_x_px * geometry.pixel_size_x_mm * 1e-3,
        pixel1=geometry.pixel_size_y_mm * 1e-3,
        pixel2=geometry.pixel_size_x_mm * 1e-3,
        wavelength=geometry.wavelength_angstrom * 1e-10,
    )


@pytest.mark.parametrize("unit", ["q_nm^-1", "2th_deg"])
def test_profiles_equal_pyfai_integrate1d_bbox_csr(unit: str) -> None:
    pytest.importorskip("pyFAI")
    geometry = DetectorGeometry(
        shape=(300, 340),
        distance_mm=80.0,
        beam_centre_x_px=161.7,
        beam_centre_y_px=140.2,
        pixel_size_x_mm=0.075,
        pixel_size_y_mm=0.075,
        wavelength_angstrom=0.98,
    )
    valid = np.ones(geometry.shape, dtype=bool)
    valid[200:206, :] = False
    frame = np.random.default_rng(3).poisson(30.0, geometry.shape).astype(np.uint32)
    ours = AzimuthalIntegrator.build(geometry, valid, 200, unit=unit).integrate(frame)
    theirs = pyfai_integrator(geometry).integrate1d(  # type: ignore[attr-defined]
        frame,
        200,
        unit=unit,
        method=("bbox", "csr", "cython"),
        correctSolidAngle=True,
        polarization_factor=0.99,
        mask=~valid,
        error_model="poisson",
    )
    np.testing.assert_allclose(ours.radial, theirs.radial, rtol=1e-6)
    assert (theirs.intensity > 0).all()  # every bin compared holds pixels
    np.testing.assert_allclose(ours.intensity[0], theirs.intensity, rtol=PYFAI_RTOL)
    np.testing.assert_allclose(ours.sigma[0], theirs.sigma, rtol=PYFAI_RTOL)
