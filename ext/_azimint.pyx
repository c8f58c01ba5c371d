# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Azimuthal integration as a sparse product: frame (row vector of pixels) × a CSR
pixel-to-bin matrix of bbox-split coefficients, precomputed once per geometry.

The matrix is pixel-major (one CSR row per pixel), so a frame is read once, in order,
and each pixel scatters into a few bins that stay in L1 cache (pyFAI's bin-major CSR
gathers pixels along rings instead, a cache miss per row). Two accumulator copies
(even and odd pixels) break the store-to-load chains of neighbouring pixels that fall
in one bin. Threads split the pixels, each with its own accumulators; invalid pixels
(overflow marker, negative or NaN counts) subtract their normalisation instead.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint16_t, uint32_t, int32_t

ctypedef fused frame_t:
    uint16_t
    uint32_t
    int32_t
    float


def integrate_kernel(
    const frame_t[:, ::1] frames,
    const int64_t[::1] indptr,
    const uint16_t[::1] indices,
    const float[::1] coefs,
    const float[::1] norm,
    double lowest,
    double overflow,
    double[:, :, ::1] partial_signal,
    double[:, :, ::1] partial_variance,
    double[:, :, ::1] partial_removed,
    int n_threads,
):
    """Per frame and per part of the pixels (axis 1 of the partials: 2 per part, even
    and odd pixels): Σ c·I, Σ c²·max(I, 0), and Σ c·norm of invalid pixels, by bin.

    `frames` is (n_frames, n_pixels); partials (n_frames, 2·n_parts, n_bins), zeroed by
    the caller. Trusts its arguments (the face `prefect_beamline.ext.azimint` checks).
    """
    cdef Py_ssize_t n_frames = frames.shape[0], n_pixels = frames.shape[1]
    cdef Py_ssize_t n_parts = partial_signal.shape[1] // 2
    cdef Py_ssize_t n_bins = partial_signal.shape[2]
    cdef Py_ssize_t part_size = (n_pixels + n_parts - 1) // n_parts
    cdef Py_ssize_t f, part, pix, start, stop, k
    cdef double v, c, positive
    cdef double* signal
    cdef double* variance
    cdef double* removed
    cdef const int64_t* rows = &indptr[0]
    cdef const uint16_t* bins = &indices[0]
    cdef const float* weights = &coefs[0]
    for f in range(n_frames):
        for part in prange(n_parts, nogil=True, num_threads=n_threads, schedule="static"):
            start = part * part_size
            stop = start + part_size
            if stop > n_pixels:
                stop = n_pixels
            for pix in range(start, stop):
                v = <double> frames[f, pix]
                # Even and odd pixels accumulate apart: no store-to-load chain between
                # neighbours that fall in the same bin.
                signal = &partial_signal[f, 2 * part + (pix & 1), 0]
                variance = &partial_variance[f, 2 * part + (pix & 1), 0]
                if v >= lowest and v < overflow:
                    positive = v if v > 0.0 else 0.0
                    for k in range(rows[pix], rows[pix + 1]):
                        c = weights[k]
                        signal[bins[k]] += c * v
                        variance[bins[k]] += c * c * positive
                else:
                    removed = &partial_removed[f, 2 * part + (pix & 1), 0]
                    for k in range(rows[pix], rows[pix + 1]):
                        removed[bins[k]] += weights[k] * norm[pix]
