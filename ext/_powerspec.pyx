# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Averages of a power spectrum (rfft2 half-plane layout) for CTF fitting.

- along ellipses r² = a kx² + 2 b kx ky + c ky² (a = c = 1, b = 0: the radial average;
  otherwise the equi-phase average of an astigmatic spectrum);
- in angular sectors x radius bins: the rotationally resolved spectrum.

kx (columns) runs 0..n/2, ky (rows) wraps at n/2, both in spectrum pixels. The half
plane covers angles -90°..90°, enough since a power spectrum is centro-symmetric.
Spectra are small (one tile), so the loops run serially with the GIL released.
"""

from libc.math cimport atan2, sqrt, M_PI

from _shared cimport clamp_index, signed_frequency


def elliptical_average_kernel(
    const float[:, ::1] spectrum,
    double a,
    double b,
    double c,
    double[::1] sums,
    double[::1] counts,
):
    cdef Py_ssize_t ny = spectrum.shape[0], nxh = spectrum.shape[1]
    cdef Py_ssize_t n_bins = sums.shape[0]
    cdef Py_ssize_t i, j, index
    cdef double kx, ky, r2
    with nogil:
        for i in range(ny):
            ky = signed_frequency(i, ny)
            for j in range(nxh):
                kx = j
                r2 = a * kx * kx + 2.0 * b * kx * ky + c * ky * ky
                if r2 < 0:
                    continue
                index = <Py_ssize_t>(sqrt(r2) + 0.5)
                if index < n_bins:
                    sums[index] += spectrum[i, j]
                    counts[index] += 1.0


def sector_map_kernel(int[:, ::1] bins, Py_ssize_t n_sectors, Py_ssize_t n_bins):
    """bins[i, j] = sector * n_bins + radius bin of half-plane pixel (i, j), or -1 (the
    origin, and radii past the last bin): the atan2 and sqrt of every pixel, done once
    per spectrum shape so `binned_sum_kernel` is one pass over the spectrum."""
    cdef Py_ssize_t ny = bins.shape[0], nxh = bins.shape[1]
    cdef Py_ssize_t i, j, index, sector
    cdef double kx, ky, theta
    with nogil:
        for i in range(ny):
            ky = signed_frequency(i, ny)
            for j in range(nxh):
                kx = j
                bins[i, j] = -1
                if kx == 0 and ky == 0:
                    continue
                index = <Py_ssize_t>(sqrt(kx * kx + ky * ky) + 0.5)
                if index >= n_bins:
                    continue
                theta = atan2(ky, kx)
                sector = clamp_index(
                    <Py_ssize_t>((theta + 0.5 * M_PI) / M_PI * n_sectors), n_sectors
                )
                bins[i, j] = <int>(sector * n_bins + index)


cdef inline void _binned_rows(
    const float* first, const int* first_bins, const float* second, const int* second_bins,
    Py_ssize_t n, double* sums,
) noexcept nogil:
    """Two rows at once, each summing runs of pixels in the same bin in a register and
    adding a run to `sums` when its bin changes: two independent chains of additions,
    where one pixel after another through memory would be one long chain."""
    cdef Py_ssize_t j
    cdef int bin_a = -1, bin_b = -1, index
    cdef double run_a = 0.0, run_b = 0.0
    for j in range(n):
        index = first_bins[j]
        if index != bin_a:
            if bin_a >= 0:
                sums[bin_a] += run_a
            bin_a = index
            run_a = 0.0
        run_a += first[j]
        index = second_bins[j]
        if index != bin_b:
            if bin_b >= 0:
                sums[bin_b] += run_b
            bin_b = index
            run_b = 0.0
        run_b += second[j]
    if bin_a >= 0:
        sums[bin_a] += run_a
    if bin_b >= 0:
        sums[bin_b] += run_b


def binned_sum_kernel(const float[:, ::1] spectrum, const int[:, ::1] bins, double[::1] sums):
    """sums[bins[i, j]] += spectrum[i, j] for every pixel whose bin is not -1: one pass
    over the spectrum and its bin map, rows i and i + ny/2 side by side."""
    cdef Py_ssize_t ny = spectrum.shape[0], nxh = spectrum.shape[1]
    cdef Py_ssize_t half = ny // 2, i
    with nogil:
        for i in range(half):
            _binned_rows(
                &spectrum[i, 0], &bins[i, 0], &spectrum[i + half, 0], &bins[i + half, 0],
                nxh, &sums[0],
            )
        if ny % 2:  # the last row of an odd height, alone
            for i in range(nxh):
                if bins[ny - 1, i] >= 0:
                    sums[bins[ny - 1, i]] += spectrum[ny - 1, i]
