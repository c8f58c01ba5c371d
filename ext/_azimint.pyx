# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Azimuthal integration as a sparse product, from a per-pixel map precomputed once per
geometry: every pixel's first bin (uint16) and its `span` split coefficients (float32;
with bbox splitting and bins wider than a pixel, span is 2).

Why not a CSR matrix: its int32/int64 row pointers and an index per coefficient stream
~3× the frame's bytes, and a variable number of coefficients per pixel costs a
mispredicted branch every few pixels. Here a frame and the map are read once, in order,
with a fixed trip count; each pixel adds (c·I, c²·I) pairs to `span` adjacent bins of an
interleaved (signal, variance) array that stays in L1. The normalisation Σ c·norm
depends only on the geometry (precomputed); a frame only subtracts the norm of its
invalid pixels (overflow marker, negative, NaN). COPIES accumulator copies (pixel p
adds to copy p % COPIES) break the store-to-load chains of neighbouring pixels that
fall in one bin; threads split the pixels, each with its own copies.
"""

from cython.parallel cimport prange
from libc.math cimport fmax
from libc.stdint cimport uint16_t, uint32_t, int32_t

ctypedef fused frame_t:
    uint16_t
    uint32_t
    int32_t
    float


cdef enum:
    COPIES = 4  # accumulator copies per part (a power of 2): pixel p adds to p % COPIES


cdef inline bint _valid(frame_t value, double lowest, double overflow) noexcept nogil:
    """Counts in [lowest, overflow): integers compared as integers (a double compare of
    a count feeds a branch the predictor misses on every other pixel of a blank frame)."""
    if frame_t is float:
        return value >= lowest and value < overflow
    else:
        return value >= <frame_t> lowest and value < <frame_t> overflow


cdef inline void _integrate_span(
    const frame_t* frame, const uint16_t* first, const float* coefs, const float* norm,
    Py_ssize_t start, Py_ssize_t stop, Py_ssize_t span, double lowest, double overflow,
    double* accumulators, Py_ssize_t stride, double* removed,
) noexcept nogil:
    """Pixels start..stop of one frame into one part's accumulators (COPIES copies,
    `stride` doubles apart). Called with a literal `span` where it can be, so the
    compiler unrolls the loop over a pixel's bins. A valid count is ≥ lowest ≥ 0 for
    integer frames, so its variance term needs no clamp; float frames clamp with fmax."""
    cdef Py_ssize_t pix, k
    cdef double v, c, positive
    cdef double* acc
    cdef const float* w
    for pix in range(start, stop):
        acc = accumulators + (pix & (COPIES - 1)) * stride + 2 * first[pix]
        w = coefs + pix * span
        if _valid(frame[pix], lowest, overflow):
            v = <double> frame[pix]
            positive = fmax(v, 0.0) if frame_t is float else v
            for k in range(span):
                c = w[k]
                acc[2 * k] += c * v
                acc[2 * k + 1] += c * c * positive
        else:
            for k in range(span):
                removed[first[pix] + k] += w[k] * norm[pix]


cdef inline void _integrate_part(
    const frame_t* frame, const uint16_t* first, const float* coefs, const float* norm,
    Py_ssize_t start, Py_ssize_t stop, Py_ssize_t span, double lowest, double overflow,
    double* accumulators, Py_ssize_t stride, double* removed,
) noexcept nogil:
    """`_integrate_span` with the common spans as constants (2: bins at least as wide as
    a pixel's bbox; 3–4: narrower bins)."""
    if span == 2:
        _integrate_span(frame, first, coefs, norm, start, stop, 2, lowest, overflow,
                        accumulators, stride, removed)
    elif span == 3:
        _integrate_span(frame, first, coefs, norm, start, stop, 3, lowest, overflow,
                        accumulators, stride, removed)
    elif span == 4:
        _integrate_span(frame, first, coefs, norm, start, stop, 4, lowest, overflow,
                        accumulators, stride, removed)
    else:
        _integrate_span(frame, first, coefs, norm, start, stop, span, lowest, overflow,
                        accumulators, stride, removed)


def accumulator_copies():
    """How many accumulator copies a part of the pixels needs (axis 1 of `partial`)."""
    return COPIES


def integrate_kernel(
    const frame_t[:, ::1] frames,
    const uint16_t[::1] first,
    const float[:, ::1] coefs,
    const float[::1] norm,
    double lowest,
    double overflow,
    double[:, :, ::1] partial,
    double[:, :, ::1] partial_removed,
    int n_threads,
):
    """Per frame and part of the pixels: interleaved (Σ c·I, Σ c²·max(I, 0)) by bin, in
    COPIES copies (pixel p in copy p % COPIES), and Σ c·norm of the invalid pixels by bin.

    `frames` is (n_frames, n_pixels), `coefs` (n_pixels, span); `partial` is
    (n_frames, COPIES·n_parts, 2·(n_bins + span − 1)), `partial_removed` (n_frames, n_parts,
    n_bins + span − 1), both zeroed by the caller. Trusts its arguments (the face
    `prefect_beamline.ext.azimint` checks them).
    """
    cdef Py_ssize_t n_frames = frames.shape[0], n_pixels = frames.shape[1]
    cdef Py_ssize_t span = coefs.shape[1]
    cdef Py_ssize_t n_parts = partial_removed.shape[1]
    cdef Py_ssize_t part_size = (n_pixels + n_parts - 1) // n_parts
    cdef Py_ssize_t f, part, start, stop
    if n_frames == 0 or n_pixels == 0:
        return
    for f in range(n_frames):
        for part in prange(n_parts, nogil=True, num_threads=n_threads, schedule="static"):
            start = part * part_size
            stop = start + part_size
            if stop > n_pixels:
                stop = n_pixels
            _integrate_part(
                &frames[f, 0], &first[0], &coefs[0, 0], &norm[0], start, stop, span,
                lowest, overflow, &partial[f, COPIES * part, 0], partial.shape[2],
                &partial_removed[f, part, 0],
            )
