# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Tomography pre-processing: flat/dark normalisation fused with minus-log, ring filter.

Both run over sinograms (detector rows) in parallel with the GIL released. The
normaliser also transposes: it reads projections (angle, row, column) as the detector
writes them and writes sinograms (row, angle, column), the order the ring filter and
the back projector walk.
"""

from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

from _shared cimport clamp_index, projection_count_t

cdef extern from "_normalise_row.h":
    void normalise_row(const float* counts, const float* dark, const float* inverse_open,
                       float* out, Py_ssize_t n, float min_transmission) noexcept nogil


cdef int _normalise_sinogram(
    const projection_count_t[:, :, ::1] projections,
    const float[:, ::1] flat,
    const float[:, ::1] dark,
    float[:, :, ::1] sinograms,
    Py_ssize_t r,
    float min_transmission,
) noexcept nogil:
    """Sinogram r: each projection's row r, converted to float32 (if it is not) into a
    buffer that stays in L1, then normalised by the vectorised `normalise_row`."""
    cdef Py_ssize_t n_angles = projections.shape[0]
    cdef Py_ssize_t n_columns = projections.shape[2]
    cdef Py_ssize_t a, c
    cdef float open_beam
    cdef float* inverse_open = <float*>malloc(2 * n_columns * sizeof(float))
    cdef float* counts = inverse_open + n_columns
    if inverse_open == NULL:
        return -1
    for c in range(n_columns):
        open_beam = flat[r, c] - dark[r, c]
        inverse_open[c] = 1.0 / open_beam if open_beam > 0.0 else 0.0
    for a in range(n_angles):
        if projection_count_t is float:
            normalise_row(&projections[a, r, 0], &dark[r, 0], inverse_open,
                          &sinograms[r, a, 0], n_columns, min_transmission)
        else:
            for c in range(n_columns):
                counts[c] = <float>projections[a, r, c]
            normalise_row(counts, &dark[r, 0], inverse_open, &sinograms[r, a, 0], n_columns,
                          min_transmission)
    free(inverse_open)
    return 0


def normalise_kernel(
    const projection_count_t[:, :, ::1] projections,
    const float[:, ::1] flat,
    const float[:, ::1] dark,
    float[:, :, ::1] sinograms,
    float min_transmission,
    int n_threads,
):
    """sinograms[r, a, c] = -log((projections[a, r, c] - dark) / (flat - dark)).

    A pixel whose flat does not exceed its dark carries no information: 0 (no
    attenuation). Transmissions below `min_transmission` (zero, negative, NaN: noise or
    dead pixels) are clamped to it, so no log ever sees a non-positive number. The log
    is `fast_logf` of ext/include/_normalise_row.h (relative error < 1e-7).
    """
    cdef Py_ssize_t n_rows = projections.shape[1]
    cdef Py_ssize_t r
    cdef int failures = 0
    for r in prange(n_rows, nogil=True, num_threads=n_threads, schedule="static"):
        if _normalise_sinogram(projections, flat, dark, sinograms, r, min_transmission) != 0:
            failures += 1
    if failures:
        raise MemoryError("normalise: out of memory for row buffers")


cdef inline double _median(double* window, Py_ssize_t n) noexcept nogil:
    """Median of n values (insertion sort: windows are a few dozen values)."""
    cdef Py_ssize_t i, j
    cdef double value
    for i in range(1, n):
        value = window[i]
        j = i - 1
        while j >= 0 and window[j] > value:
            window[j + 1] = window[j]
            j -= 1
        window[j + 1] = value
    if n % 2:
        return window[n // 2]
    return 0.5 * (window[n // 2 - 1] + window[n // 2])


cdef int _remove_stripes(float[:, ::1] sinogram, int half_width) noexcept nogil:
    """Subtract each column's deviation of its mean from the median of its neighbours.

    A detector column whose response differs from the flat adds the same offset at every
    angle: a stripe in the sinogram, a ring in the slice. Its mean over angles stands out
    from the median of the column means around it (edges repeat the end column).
    """
    cdef Py_ssize_t n_angles = sinogram.shape[0]
    cdef Py_ssize_t n_columns = sinogram.shape[1]
    cdef Py_ssize_t width = 2 * half_width + 1
    cdef Py_ssize_t a, c, k
    cdef double* means = <double*>malloc(n_columns * sizeof(double))
    cdef double* stripe = <double*>malloc(n_columns * sizeof(double))
    cdef double* window = <double*>malloc(width * sizeof(double))
    if means == NULL or stripe == NULL or window == NULL:
        free(means)
        free(stripe)
        free(window)
        return -1
    for c in range(n_columns):
        means[c] = 0.0
    for a in range(n_angles):
        for c in range(n_columns):
            means[c] += sinogram[a, c]
    for c in range(n_columns):
        means[c] /= n_angles
    for c in range(n_columns):
        for k in range(width):
            window[k] = means[clamp_index(c - half_width + k, n_columns)]
        stripe[c] = means[c] - _median(window, width)
    for a in range(n_angles):
        for c in range(n_columns):
            sinogram[a, c] = <float>(sinogram[a, c] - stripe[c])
    free(means)
    free(stripe)
    free(window)
    return 0


def ring_filter_kernel(float[:, :, ::1] sinograms, int half_width, int n_threads):
    """Remove stripes from every sinogram (row, angle, column), in place, in parallel."""
    cdef Py_ssize_t n_sinograms = sinograms.shape[0]
    cdef Py_ssize_t s
    cdef int failures = 0
    for s in prange(n_sinograms, nogil=True, num_threads=n_threads, schedule="dynamic"):
        if _remove_stripes(sinograms[s], half_width) != 0:
            failures += 1
    if failures:
        raise MemoryError("ring filter: out of memory for column buffers")
