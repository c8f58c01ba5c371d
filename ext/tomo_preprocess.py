"""Tomography preprocessing: flat/dark normalisation with minus-log, and the ring filter.

The public face of the `_tomo_preprocess` Cython kernels: checks shapes and dtypes
(with `prefect_beamline.ext.arguments`), allocates outputs. Both release the GIL and run
over detector rows (sinograms) in parallel on `n_threads` threads (None or 0: every
core). Sinograms are (row, angle, column) float32 line integrals, as
`prefect_beamline.ext.backproject` takes them.
"""

from __future__ import annotations

import numpy as np

from prefect_beamline.ext._tomo_preprocess import normalise_kernel, ring_filter_kernel
from prefect_beamline.ext.arguments import (
    kernel_input,
    kernel_threads,
    output_buffer,
    require_array,
    require_buffer,
    require_integer,
    require_number,
)

RAW_DTYPES = (np.uint16, np.uint32, np.float32)
MIN_TRANSMISSION = 1e-6


def normalise(
    projections: np.ndarray,
    flat: np.ndarray,
    dark: np.ndarray,
    *,
    out: np.ndarray | None = None,
    min_transmission: float = MIN_TRANSMISSION,
    n_threads: int | None = 1,
) -> np.ndarray:
    """Sinograms (row, angle, column) of -log((projection - dark) / (flat - dark)).

    `projections` is (angle, row, column) as a detector writes them (uint16, uint32 or
    float32); `flat` and `dark` are the (row, column) means of the flat and dark frames.
    Transmissions at or below `min_transmission` (zero or negative counts) are clamped to
    it; pixels whose flat does not exceed their dark get 0.
    """
    require_array(
        "projections", projections, ndim=3, axes="(angle, row, column)", dtypes=RAW_DTYPES
    )
    min_transmission = require_number("min_transmission", min_transmission)
    if not 0.0 < min_transmission < 1.0:
        raise ValueError(f"min_transmission must be in (0, 1), got {min_transmission}")
    threads = kernel_threads(n_threads)
    n_angles, n_rows, n_columns = projections.shape
    source = "the projections' (row, column)"
    flat32 = kernel_input("flat", flat, np.float32, (n_rows, n_columns), source=source)
    dark32 = kernel_input("dark", dark, np.float32, (n_rows, n_columns), source=source)
    out = output_buffer(
        "out",
        out,
        (n_rows, n_angles, n_columns),
        np.float32,
        source="the sinograms' (row, angle, column)",
    )
    normalise_kernel(
        np.ascontiguousarray(projections),
        flat32,
        dark32,
        out,
        min_transmission,
        threads,
    )
    return out


def ring_filter(sinograms: np.ndarray, *, width: int = 9, n_threads: int | None = 1) -> np.ndarray:
    """Remove ring artefacts from sinograms (row, angle, column), in place; returns them.

    Each detector column's mean over angles minus the median of the means of the
    `width` columns around it (odd, edges repeated) is subtracted from that column: a
    column whose response differs from the flat field (a stripe in the sinogram, a ring
    in the slice) loses its offset, while features of the sample, which move across
    columns as the sample turns, are left alone.
    """
    require_buffer("sinograms", sinograms, np.float32, ndim=3, axes="(row, angle, column)")
    width = require_integer("width", width)
    if width < 3 or width % 2 == 0:
        raise ValueError(f"ring filter width must be an odd number >= 3, got {width}")
    ring_filter_kernel(sinograms, width // 2, kernel_threads(n_threads))
    return sinograms
