# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Per-pixel loops of cryo-EM motion correction: gain-corrected binning, the shifted
frame sum with bilinear sub-pixel interpolation, and dose-weight filter application.

Each loop runs with the GIL released, rows in parallel (prange). Frames come in as the
detector stored them (uint8, int8, int16, uint16, float32): no converted copy is made.
"""

from cython.parallel cimport prange
from libc.math cimport expf, floor, pow, sqrt, sqrtf
from libc.stdlib cimport free, malloc

from _shared cimport clamp_index, em_count_t, signed_frequency


def gain_bin_kernel(
    const em_count_t[:, ::1] raw,
    const float[:, ::1] gain,
    bint use_gain,
    int factor,
    float[:, ::1] out,
    int n_threads,
):
    """out[i, j] = mean over the factor x factor block of raw * gain.

    Each output row first sums its `factor` input rows into a full-width buffer (a
    straight, vectorisable loop), then sums groups of `factor` columns of it.
    """
    cdef Py_ssize_t ny = out.shape[0], nx = out.shape[1]
    cdef Py_ssize_t width = nx * factor
    cdef Py_ssize_t i, j, a, b, y, x
    cdef float total
    cdef float scale = 1.0 / (factor * factor)
    cdef float* columns
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            columns = <float*>malloc(width * sizeof(float))
            if columns == NULL:
                with gil:
                    raise MemoryError()
            for x in range(width):
                columns[x] = 0
            for a in range(factor):
                y = i * factor + a
                if use_gain:
                    for x in range(width):
                        columns[x] += raw[y, x] * gain[y, x]
                else:
                    for x in range(width):
                        columns[x] += raw[y, x]
            for j in range(nx):
                total = 0
                for b in range(factor):
                    total = total + columns[j * factor + b]
                out[i, j] = total * scale
            free(columns)


cdef inline double _field(const double* c, double u, double v) noexcept nogil:
    return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v


cdef inline void _corrected_row(
    const em_count_t[:, ::1] raw,
    const float[:, ::1] gain,
    bint use_gain,
    Py_ssize_t y,
    Py_ssize_t x0,
    Py_ssize_t width,
    float* row,
) noexcept nogil:
    cdef Py_ssize_t k
    if use_gain:
        for k in range(width):
            row[k] = raw[y, x0 + k] * gain[y, x0 + k]
    else:
        for k in range(width):
            row[k] = raw[y, x0 + k]


def shift_accumulate_kernel(
    const em_count_t[:, ::1] raw,
    const float[:, ::1] gain,
    bint use_gain,
    const double[::1] coeff_x,
    const double[::1] coeff_y,
    float[:, ::1] out,
    int tile,
    int n_threads,
):
    """out[y, x] += (raw * gain)(x + dx, y + dy), bilinear, edges clamped.

    The shift field (quadratic, coefficients coeff_x / coeff_y at u = x/nx - 0.5,
    v = y/ny - 0.5; see prefect_beamline.analysis.motion.field_basis) is evaluated at
    the centre of each tile x tile block and held constant inside it: the bilinear
    weights are then constant too, and the inner loop is four loads and four
    multiply-adds per pixel. Local motion varies over hundreds of pixels, so the error
    of holding it for one tile is a small fraction of a pixel.
    """
    cdef Py_ssize_t ny = raw.shape[0], nx = raw.shape[1]
    cdef Py_ssize_t tiles_y = (ny + tile - 1) // tile, tiles_x = (nx + tile - 1) // tile
    cdef Py_ssize_t t, ty, tx, y0, y1, x0, x1, y, x, ix, iy, xs, ys, xa, xb, ya, yb
    cdef double u, v, dx, dy
    cdef float fx, fy, w00, w01, w10, w11, g00, g01, g10, g11
    cdef const double* cx = &coeff_x[0]
    cdef const double* cy = &coeff_y[0]
    cdef float* o
    cdef float* upper
    cdef float* lower
    cdef float* swap
    cdef Py_ssize_t width
    with nogil:
        for t in prange(tiles_y * tiles_x, num_threads=n_threads, schedule="static"):
            ty = t // tiles_x
            tx = t % tiles_x
            y0 = ty * tile
            y1 = min(y0 + tile, ny)
            x0 = tx * tile
            x1 = min(x0 + tile, nx)
            u = (x0 + 0.5 * (x1 - x0 - 1)) / nx - 0.5
            v = (y0 + 0.5 * (y1 - y0 - 1)) / ny - 0.5
            dx = _field(cx, u, v)
            dy = _field(cy, u, v)
            ix = <Py_ssize_t>floor(dx)
            iy = <Py_ssize_t>floor(dy)
            fx = <float>(dx - ix)
            fy = <float>(dy - iy)
            w00 = (1 - fy) * (1 - fx)
            w01 = (1 - fy) * fx
            w10 = fy * (1 - fx)
            w11 = fy * fx
            if x0 + ix >= 0 and x1 + ix < nx and y0 + iy >= 0 and y1 + iy < ny:
                # Gain-correct each input row of the tile once (two row buffers, reused
                # as the tile moves down), then four multiply-adds per output pixel.
                width = x1 - x0 + 1
                upper = <float*>malloc(2 * width * sizeof(float))
                if upper == NULL:
                    with gil:
                        raise MemoryError()
                lower = upper + width
                _corrected_row(raw, gain, use_gain, y0 + iy, x0 + ix, width, upper)
                for y in range(y0, y1):
                    _corrected_row(raw, gain, use_gain, y + iy + 1, x0 + ix, width, lower)
                    o = &out[y, x0]
                    for x in range(x1 - x0):
                        o[x] += (
                            w00 * upper[x] + w01 * upper[x + 1]
                            + w10 * lower[x] + w11 * lower[x + 1]
                        )
                    swap = upper
                    upper = lower
                    lower = swap
                free(upper if upper < lower else lower)
            else:
                # Tiles whose samples leave the frame: clamp each sample to the edge.
                for y in range(y0, y1):
                    ya = clamp_index(y + iy, ny)
                    yb = clamp_index(y + iy + 1, ny)
                    o = &out[y, 0]
                    for x in range(x0, x1):
                        xa = clamp_index(x + ix, nx)
                        xb = clamp_index(x + ix + 1, nx)
                        g00 = raw[ya, xa]
                        g01 = raw[ya, xb]
                        g10 = raw[yb, xa]
                        g11 = raw[yb, xb]
                        if use_gain:
                            g00 = g00 * gain[ya, xa]
                            g01 = g01 * gain[ya, xb]
                            g10 = g10 * gain[yb, xa]
                            g11 = g11 * gain[yb, xb]
                        o[x] += w00 * g00 + w01 * g01 + w10 * g10 + w11 * g11


cdef inline double _critical_exposure(double k, double voltage_scale) noexcept nogil:
    # Grant & Grigorieff (2015), eLife 4:e06980: Ne(k) = a k^b + c electrons/Å² at 300 kV.
    return (0.245 * pow(k, -1.665) + 2.81) * voltage_scale


def half_inverse_critical_exposure_kernel(
    float[:, ::1] out, Py_ssize_t nx, double pixel_size, double voltage_scale, int n_threads
):
    """out[i, j] = 1 / (2 Ne(k)) on the rfft2 grid of an image nx wide (k = 0: 0, never
    attenuated). The width is passed: nx // 2 + 1 columns come from an odd and an even nx."""
    cdef Py_ssize_t ny = out.shape[0], nxh = out.shape[1]
    cdef Py_ssize_t i, j
    cdef double ky, kx, k
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            ky = signed_frequency(i, ny) / (ny * pixel_size)
            for j in range(nxh):
                kx = j / (nx * pixel_size)
                k = sqrt(kx * kx + ky * ky)
                out[i, j] = 0.0 if k == 0 else <float>(0.5 / _critical_exposure(k, voltage_scale))


def dose_accumulate_kernel(
    const float complex[:, ::1] group,
    float complex[:, ::1] acc,
    float[:, ::1] weight_sq,
    const float[:, ::1] half_inverse_ne,
    double dose,
    int n_frames,
    int n_threads,
):
    """acc += W(k) group, weight_sq += n_frames W(k)² with W = exp(-dose / 2 Ne(k)).

    `group` is the rfft2 (ny, nx//2 + 1) of the sum of `n_frames` aligned frames whose
    mean accumulated exposure is `dose` (e/Å²).
    """
    cdef Py_ssize_t ny = group.shape[0], nxh = group.shape[1]
    cdef Py_ssize_t i, j
    cdef float w, d = <float>dose
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            for j in range(nxh):
                w = expf(-d * half_inverse_ne[i, j])
                acc[i, j] = acc[i, j] + w * group[i, j]
                weight_sq[i, j] += n_frames * w * w


def dose_normalise_kernel(
    float complex[:, ::1] acc, const float[:, ::1] weight_sq, int n_frames, int n_threads
):
    """acc *= sqrt(n_frames / weight_sq): the unweighted sum's scale at k = 0."""
    cdef Py_ssize_t ny = acc.shape[0], nxh = acc.shape[1]
    cdef Py_ssize_t i, j
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            for j in range(nxh):
                if weight_sq[i, j] > 0:
                    acc[i, j] = acc[i, j] * sqrtf(n_frames / weight_sq[i, j])


def cross_spectra_kernel(
    const float complex[:, :, ::1] spectra,
    const float[:, ::1] weight,
    const float complex[:, ::1] phase_x,
    const float complex[:, ::1] phase_y,
    float complex[:, :, ::1] products,
    int n_threads,
):
    """products[i] = weight · S_i · conj(T - A_i), the filtered cross-spectrum of each
    frame with the sum of all the other aligned frames.

    A_i = S_i · phase_y[i, row] · phase_x[i, column] is frame i moved back by its shift,
    T = Σ A_i. One pass builds a row of T, a second writes the row of every product.
    """
    cdef Py_ssize_t n = spectra.shape[0], ny = spectra.shape[1], nxh = spectra.shape[2]
    cdef Py_ssize_t r, i, c
    # Real arithmetic: C's complex multiply checks for infinities (__mulsc3), 5x slower.
    cdef float pyr, pyi, rr, ri, sr, si, ar, ai, dr, di, w
    cdef float* total
    cdef const float* srow
    cdef const float* prow
    cdef float* orow
    with nogil:
        for r in prange(ny, num_threads=n_threads, schedule="static"):
            total = <float*>malloc(2 * nxh * sizeof(float))
            if total == NULL:
                with gil:
                    raise MemoryError()
            for c in range(2 * nxh):
                total[c] = 0
            for i in range(n):
                pyr = phase_y[i, r].real
                pyi = phase_y[i, r].imag
                srow = <const float*>&spectra[i, r, 0]
                prow = <const float*>&phase_x[i, 0]
                for c in range(nxh):
                    rr = pyr * prow[2 * c] - pyi * prow[2 * c + 1]
                    ri = pyr * prow[2 * c + 1] + pyi * prow[2 * c]
                    sr = srow[2 * c]
                    si = srow[2 * c + 1]
                    total[2 * c] += sr * rr - si * ri
                    total[2 * c + 1] += sr * ri + si * rr
            for i in range(n):
                pyr = phase_y[i, r].real
                pyi = phase_y[i, r].imag
                srow = <const float*>&spectra[i, r, 0]
                prow = <const float*>&phase_x[i, 0]
                orow = <float*>&products[i, r, 0]
                for c in range(nxh):
                    rr = pyr * prow[2 * c] - pyi * prow[2 * c + 1]
                    ri = pyr * prow[2 * c + 1] + pyi * prow[2 * c]
                    sr = srow[2 * c]
                    si = srow[2 * c + 1]
                    ar = sr * rr - si * ri
                    ai = sr * ri + si * rr
                    # d = conj(T - A); product = w S d
                    dr = total[2 * c] - ar
                    di = ai - total[2 * c + 1]
                    w = weight[r, c]
                    orow[2 * c] = w * (sr * dr - si * di)
                    orow[2 * c + 1] = w * (sr * di + si * dr)
            free(total)
