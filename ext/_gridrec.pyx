# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Gridding of polar Fourier samples onto a Cartesian grid (the "gridding" of gridrec),
and the cropping and de-apodisation of the image the grid's inverse FFT gives.

By the Fourier slice theorem the 1-D FFT of a projection at angle theta samples the
slice's 2-D Fourier transform along the line (k cos theta, k sin theta). Each sample is
spread onto the W x W grid points around it with a separable interpolation kernel
(Kaiser-Bessel, from a table); the image is the grid's inverse FFT divided by the
kernel's Fourier transform (de-apodisation). Only samples with k >= 0 and sin theta >= 0
are gridded (the caller mirrors the others: -k, conjugated): the slice is real, so the other half plane
is the complex conjugate and the image is twice the real part.

The grid (row, 2 x column: complex64 as float pairs) has a row for every v = k sin theta
the kernel reaches, v = row - row_offset, and wraps columns (u = k cos theta) modulo G.
Threads own bands of rows, so no two write the same grid point: each band walks every
angle, but only the radial range whose kernel reaches its rows.
"""

from cython.parallel cimport prange
from libc.math cimport ceil, floor, fabs

DEF MAX_WIDTH = 16


cdef inline float _kernel_value(const float[::1] table, double density, double offset) noexcept nogil:
    """The interpolation kernel at `offset` grid units (|offset| <= W/2), linearly
    interpolated in its table (`density` entries per grid unit, from 0)."""
    cdef double position = fabs(offset) * density
    cdef Py_ssize_t index = <Py_ssize_t>position
    cdef float fraction = <float>(position - index)
    return table[index] + fraction * (table[index + 1] - table[index])


cdef void _grid_band(
    const float[:, ::1] spectra,
    const float[::1] weights,
    const double[::1] cosines,
    const double[::1] sines,
    const unsigned char[::1] conjugate,
    const float[::1] table,
    double density,
    int width,
    float[:, ::1] grid,
    Py_ssize_t row_offset,
    Py_ssize_t first_row,
    Py_ssize_t stop_row,
) noexcept nogil:
    cdef Py_ssize_t n_angles = spectra.shape[0]
    cdef Py_ssize_t n_radial = spectra.shape[1] // 2
    cdef Py_ssize_t size = grid.shape[1] // 2
    cdef double half = 0.5 * width
    # v of this band's rows, widened by the kernel's reach: samples outside are skipped.
    cdef double v_low = first_row - row_offset - half - 1.0
    cdef double v_high = stop_row - row_offset + half + 1.0
    cdef float wx[MAX_WIDTH]
    cdef float wy[MAX_WIDTH]
    cdef Py_ssize_t a, k, k_low, k_high, q, e, row_first, q_low, q_high, column, column0
    cdef double c, s, u, v, bound
    cdef float value_re, value_im, spectrum_re, spectrum_im, weight_re, weight_im, re, im
    cdef float* row
    cdef long mu0, mv0
    for q in range(first_row, stop_row):
        for e in range(2 * size):
            grid[q, e] = 0.0
    for a in range(n_angles):
        c = cosines[a]
        s = sines[a]
        if s > 1e-12:
            bound = ceil(v_low / s)
            k_low = 0 if bound < 0 else (<Py_ssize_t>bound if bound < n_radial else n_radial)
            bound = floor(v_high / s)
            k_high = (
                -1 if bound < 0 else (<Py_ssize_t>bound if bound < n_radial - 1 else n_radial - 1)
            )
        elif v_low <= 0.0 <= v_high:
            k_low, k_high = 0, n_radial - 1
        else:
            continue
        for k in range(k_low, k_high + 1):
            v = k * s
            mv0 = <long>floor(v - half) + 1
            row_first = mv0 + row_offset
            q_low = first_row - row_first if first_row > row_first else 0
            q_high = stop_row - row_first if stop_row - row_first < width else width
            if q_low >= q_high:
                continue
            spectrum_re = spectra[a, 2 * k]
            spectrum_im = spectra[a, 2 * k + 1]
            weight_re = weights[2 * k]
            weight_im = weights[2 * k + 1]
            value_re = spectrum_re * weight_re - spectrum_im * weight_im
            value_im = spectrum_re * weight_im + spectrum_im * weight_re
            if conjugate[a]:
                value_im = -value_im
            u = k * c
            mu0 = <long>floor(u - half) + 1
            for q in range(q_low, q_high):
                wy[q] = _kernel_value(table, density, mv0 + q - v)
            for e in range(width):
                wx[e] = _kernel_value(table, density, mu0 + e - u)
            column0 = mu0 % size
            if column0 < 0:
                column0 = column0 + size
            for q in range(q_low, q_high):
                row = &grid[row_first + q, 0]
                re = value_re * wy[q]
                im = value_im * wy[q]
                if column0 + width <= size:
                    row = row + 2 * column0
                    for e in range(width):
                        row[2 * e] += re * wx[e]
                        row[2 * e + 1] += im * wx[e]
                else:
                    for e in range(width):
                        column = column0 + e
                        if column >= size:
                            column = column - size
                        row[2 * column] += re * wx[e]
                        row[2 * column + 1] += im * wx[e]


def grid_kernel(
    const float[:, ::1] spectra,
    const float[::1] weights,
    const double[::1] cosines,
    const double[::1] sines,
    const unsigned char[::1] conjugate,
    const float[::1] table,
    double density,
    int width,
    float[:, ::1] grid,
    Py_ssize_t row_offset,
    int rows_per_band,
    int n_threads,
):
    """Grid the samples spectra[a, k] * weights[k] (complex64 as float pairs, k >= 0;
    conjugated where conjugate[a]) at (u, v) = k (cos, sin)[a] onto `grid` (rows
    v + row_offset, columns u modulo G), which it overwrites. Needs sines >= 0 and
    1 <= width <= 16."""
    cdef Py_ssize_t n_rows = grid.shape[0]
    cdef Py_ssize_t n_bands = (n_rows + rows_per_band - 1) // rows_per_band
    cdef Py_ssize_t band, first_row, stop_row
    for band in prange(n_bands, nogil=True, num_threads=n_threads, schedule="dynamic"):
        first_row = band * rows_per_band
        stop_row = first_row + rows_per_band
        if stop_row > n_rows:
            stop_row = n_rows
        _grid_band(
            spectra, weights, cosines, sines, conjugate, table, density, width, grid, row_offset,
            first_row, stop_row,
        )


def crop_kernel(
    const float[:, ::1] image,
    const Py_ssize_t[::1] source_rows,
    const float[::1] row_phase,
    const float[::1] row_scale,
    const float[::1] column_scale,
    float[:, ::1] out,
    bint circle,
    int n_threads,
):
    """out[i, j] = Re(image[source_rows[i], j] * row_phase[i]) * row_scale[i] *
    column_scale[j] (image and row_phase complex64 as float pairs); with `circle`, 0
    outside radius N//2 of (N//2, N//2), as the back projector leaves it."""
    cdef Py_ssize_t size = out.shape[0]
    cdef Py_ssize_t n_columns = out.shape[1]
    cdef Py_ssize_t half = size // 2
    cdef Py_ssize_t i, j, source
    cdef float phase_re, phase_im, scale
    cdef Py_ssize_t dy, dx
    for i in prange(size, nogil=True, num_threads=n_threads, schedule="static"):
        source = source_rows[i]
        phase_re = row_phase[2 * i]
        phase_im = row_phase[2 * i + 1]
        scale = row_scale[i]
        dy = i - half
        for j in range(n_columns):
            dx = j - half
            if circle and dx * dx + dy * dy > half * half:
                out[i, j] = 0.0
            else:
                out[i, j] = (
                    image[source, 2 * j] * phase_re - image[source, 2 * j + 1] * phase_im
                ) * scale * column_scale[j]
