# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Per-pixel loops of cryo-EM motion correction: gain-corrected binning, the shifted
frame sum with bilinear sub-pixel interpolation, and dose-weight filter application.

Binning and the shifted sum take a group of frames at once (their addresses): each
block of output is finished for every frame of the group before the next, so the gain
reference and the output are read once per group while the frames stream past once.

Each loop runs with the GIL released, rows in parallel (prange). Frames come in as the
detector stored them (uint8, int8, int16, uint16, float32): no converted copy is made.
"""

from cython.parallel cimport prange
from libc.math cimport expf, floor, pow, sqrt, sqrtf
from libc.stdlib cimport free, malloc

from _shared cimport clamp_index, em_count_t, signed_frequency


cdef extern from "_motioncor_rows.h" nogil:
    void em_bin_row_u8(const unsigned char*, const float*, int, Py_ssize_t, int, Py_ssize_t, float, float*, float*)
    void em_bin_row_i8(const signed char*, const float*, int, Py_ssize_t, int, Py_ssize_t, float, float*, float*)
    void em_bin_row_i16(const short*, const float*, int, Py_ssize_t, int, Py_ssize_t, float, float*, float*)
    void em_bin_row_u16(const unsigned short*, const float*, int, Py_ssize_t, int, Py_ssize_t, float, float*, float*)
    void em_bin_row_f32(const float*, const float*, int, Py_ssize_t, int, Py_ssize_t, float, float*, float*)
    void em_shift_tile_u8(const unsigned char*, const float*, int, Py_ssize_t, Py_ssize_t, Py_ssize_t, float, float, float, float, float*, Py_ssize_t, float*)
    void em_shift_tile_i8(const signed char*, const float*, int, Py_ssize_t, Py_ssize_t, Py_ssize_t, float, float, float, float, float*, Py_ssize_t, float*)
    void em_shift_tile_i16(const short*, const float*, int, Py_ssize_t, Py_ssize_t, Py_ssize_t, float, float, float, float, float*, Py_ssize_t, float*)
    void em_shift_tile_u16(const unsigned short*, const float*, int, Py_ssize_t, Py_ssize_t, Py_ssize_t, float, float, float, float, float*, Py_ssize_t, float*)
    void em_shift_tile_f32(const float*, const float*, int, Py_ssize_t, Py_ssize_t, Py_ssize_t, float, float, float, float, float*, Py_ssize_t, float*)


cdef inline void _bin_row(
    const em_count_t* raw, const float* gain, int use_gain, Py_ssize_t stride, int factor,
    Py_ssize_t nx_out, float scale, float* columns, float* out,
) noexcept nogil:
    """`em_bin_row_<type>` of _motioncor_rows.h for this pixel type (the conditions are
    constants of each specialisation, which the C compiler folds)."""
    if em_count_t is float:
        em_bin_row_f32(<const float*>raw, gain, use_gain, stride, factor, nx_out, scale, columns, out)
    elif sizeof(em_count_t) == 1 and <em_count_t>-1 < 0:
        em_bin_row_i8(<const signed char*>raw, gain, use_gain, stride, factor, nx_out, scale, columns, out)
    elif sizeof(em_count_t) == 1:
        em_bin_row_u8(<const unsigned char*>raw, gain, use_gain, stride, factor, nx_out, scale, columns, out)
    elif <em_count_t>-1 < 0:
        em_bin_row_i16(<const short*>raw, gain, use_gain, stride, factor, nx_out, scale, columns, out)
    else:
        em_bin_row_u16(<const unsigned short*>raw, gain, use_gain, stride, factor, nx_out, scale, columns, out)


cdef inline void _shift_tile(
    const em_count_t* raw, const float* gain, int use_gain, Py_ssize_t stride, Py_ssize_t rows,
    Py_ssize_t width, float w00, float w01, float w10, float w11, float* out, float* row_pair,
) noexcept nogil:
    """`em_shift_tile_<type>` of _motioncor_rows.h for this pixel type (as `_bin_row`)."""
    if em_count_t is float:
        em_shift_tile_f32(<const float*>raw, gain, use_gain, stride, rows, width, w00, w01, w10, w11, out, stride, row_pair)
    elif sizeof(em_count_t) == 1 and <em_count_t>-1 < 0:
        em_shift_tile_i8(<const signed char*>raw, gain, use_gain, stride, rows, width, w00, w01, w10, w11, out, stride, row_pair)
    elif sizeof(em_count_t) == 1:
        em_shift_tile_u8(<const unsigned char*>raw, gain, use_gain, stride, rows, width, w00, w01, w10, w11, out, stride, row_pair)
    elif <em_count_t>-1 < 0:
        em_shift_tile_i16(<const short*>raw, gain, use_gain, stride, rows, width, w00, w01, w10, w11, out, stride, row_pair)
    else:
        em_shift_tile_u16(<const unsigned short*>raw, gain, use_gain, stride, rows, width, w00, w01, w10, w11, out, stride, row_pair)


def gain_bin_kernel(
    const em_count_t[:, ::1] first,
    const size_t[::1] addresses,
    const float[:, ::1] gain,
    bint use_gain,
    int factor,
    float[:, :, ::1] out,
    int n_threads,
):
    """out[f, i, j] = mean over the factor x factor block of frame f * gain.

    The frames are C-contiguous arrays of `first`'s shape and type at `addresses` (the
    face keeps them alive). Each output row is done for every frame in turn, so its
    `factor` gain rows are read from memory once per group, not once per frame.
    """
    cdef Py_ssize_t n = addresses.shape[0], ny = out.shape[1], nx_out = out.shape[2]
    cdef Py_ssize_t nx = first.shape[1], i, f
    cdef float scale = 1.0 / (factor * factor)
    cdef const float* gain_rows
    cdef float* columns
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            columns = <float*>malloc(nx_out * factor * sizeof(float))
            if columns == NULL:
                with gil:
                    raise MemoryError()
            gain_rows = &gain[i * factor, 0] if use_gain else &gain[0, 0]
            for f in range(n):
                _bin_row(
                    (<const em_count_t*>addresses[f]) + i * factor * nx, gain_rows, use_gain,
                    nx, factor, nx_out, scale, columns, &out[f, i, 0],
                )
            free(columns)


cdef inline double _field(const double* c, double u, double v) noexcept nogil:
    return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v


def shift_accumulate_kernel(
    const em_count_t[:, ::1] first,
    const size_t[::1] addresses,
    const float[:, ::1] gain,
    bint use_gain,
    const double[:, :, ::1] coefficients,
    float[:, ::1] out,
    int tile,
    int n_threads,
):
    """out[y, x] += Σ_f (frame_f * gain)(x + dx_f, y + dy_f), bilinear, edges clamped.

    The frames are C-contiguous arrays of `first`'s shape and type at `addresses`;
    frame f's shift field is quadratic with coefficients[f, 0] (dx) and [f, 1] (dy) at
    u = x/nx - 0.5, v = y/ny - 0.5 (see prefect_beamline.techniques.em.motion.field_basis),
    evaluated at the centre of each tile x tile block and held constant inside it: the
    bilinear weights are then constant too, and the inner loop is four loads and four
    multiply-adds per pixel. Local motion varies over hundreds of pixels, so the error of
    holding it for one tile is a small fraction of a pixel. Every frame is added to a tile
    before the next tile: the tile's sum and gain stay in cache, each frame streams once.
    """
    cdef Py_ssize_t n = addresses.shape[0], ny = first.shape[0], nx = first.shape[1]
    cdef Py_ssize_t tiles_y = (ny + tile - 1) // tile, tiles_x = (nx + tile - 1) // tile
    cdef Py_ssize_t t, f, ty, tx, y0, y1, x0, x1, y, x, ix, iy, xa, xb, ya, yb, start
    cdef double u, v, dx, dy
    cdef float fx, fy, w00, w01, w10, w11, g00, g01, g10, g11
    cdef const em_count_t* raw
    cdef const float* gain_base = &gain[0, 0]
    cdef float* o
    cdef float* row_pair
    with nogil:
        for t in prange(tiles_y * tiles_x, num_threads=n_threads, schedule="static"):
            row_pair = <float*>malloc(2 * (tile + 1) * sizeof(float))
            if row_pair == NULL:
                with gil:
                    raise MemoryError()
            ty = t // tiles_x
            tx = t % tiles_x
            y0 = ty * tile
            y1 = min(y0 + tile, ny)
            x0 = tx * tile
            x1 = min(x0 + tile, nx)
            u = (x0 + 0.5 * (x1 - x0 - 1)) / nx - 0.5
            v = (y0 + 0.5 * (y1 - y0 - 1)) / ny - 0.5
            for f in range(n):
                raw = <const em_count_t*>addresses[f]
                dx = _field(&coefficients[f, 0, 0], u, v)
                dy = _field(&coefficients[f, 1, 0], u, v)
                ix = <Py_ssize_t>floor(dx)
                iy = <Py_ssize_t>floor(dy)
                fx = <float>(dx - ix)
                fy = <float>(dy - iy)
                w00 = (1 - fy) * (1 - fx)
                w01 = (1 - fy) * fx
                w10 = fy * (1 - fx)
                w11 = fy * fx
                if x0 + ix >= 0 and x1 + ix < nx and y0 + iy >= 0 and y1 + iy < ny:
                    start = (y0 + iy) * nx + x0 + ix
                    _shift_tile(
                        raw + start, gain_base + (start if use_gain else 0), use_gain, nx,
                        y1 - y0, x1 - x0, w00, w01, w10, w11, &out[y0, x0], row_pair,
                    )
                else:
                    # Tiles whose samples leave the frame: clamp each sample to the edge.
                    for y in range(y0, y1):
                        ya = clamp_index(y + iy, ny) * nx
                        yb = clamp_index(y + iy + 1, ny) * nx
                        o = &out[y, 0]
                        for x in range(x0, x1):
                            xa = clamp_index(x + ix, nx)
                            xb = clamp_index(x + ix + 1, nx)
                            g00 = raw[ya + xa]
                            g01 = raw[ya + xb]
                            g10 = raw[yb + xa]
                            g11 = raw[yb + xb]
                            if use_gain:
                                g00 = g00 * gain_base[ya + xa]
                                g01 = g01 * gain_base[ya + xb]
                                g10 = g10 * gain_base[yb + xa]
                                g11 = g11 * gain_base[yb + xb]
                            o[x] += w00 * g00 + w01 * g01 + w10 * g10 + w11 * g11
            free(row_pair)


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
