# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Per-pixel loops of cryo-EM motion correction: gain-corrected binning, the shifted
frame sum with bilinear sub-pixel interpolation, and dose-weight filter application.

Each loop runs with the GIL released, rows in parallel (prange). Frames come in as the
detector stored them (uint8, int8, int16, uint16, float32): no converted copy is made.
"""

from cython.parallel cimport prange
from libc.math cimport exp, floor, pow, sqrt

ctypedef fused raw_t:
    unsigned char
    signed char
    short
    unsigned short
    float


def gain_bin_kernel(
    const raw_t[:, ::1] raw,
    const float[:, ::1] gain,
    bint use_gain,
    int factor,
    float[:, ::1] out,
    int n_threads,
):
    """out[i, j] = mean over the factor x factor block of raw * gain."""
    cdef Py_ssize_t ny = out.shape[0], nx = out.shape[1]
    cdef Py_ssize_t i, j, a, b, y, x
    cdef double total
    cdef double scale = 1.0 / (factor * factor)
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            for j in range(nx):
                total = 0.0
                for a in range(factor):
                    y = i * factor + a
                    for b in range(factor):
                        x = j * factor + b
                        if use_gain:
                            total = total + <double>raw[y, x] * gain[y, x]
                        else:
                            total = total + <double>raw[y, x]
                out[i, j] = <float>(total * scale)


cdef inline double _field(const double* c, double u, double v) noexcept nogil:
    return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v


def shift_accumulate_kernel(
    const raw_t[:, ::1] raw,
    const float[:, ::1] gain,
    bint use_gain,
    const double[::1] coeff_x,
    const double[::1] coeff_y,
    float[:, ::1] out,
    int n_threads,
):
    """out[y, x] += (raw * gain)(x + dx(x, y), y + dy(x, y)), bilinear, edges clamped.

    dx, dy: the quadratic field with coefficients coeff_x, coeff_y at u = x/nx - 0.5,
    v = y/ny - 0.5 (see prefect_beamline.analysis.motion.field_basis).
    """
    cdef Py_ssize_t ny = raw.shape[0], nx = raw.shape[1]
    cdef Py_ssize_t y, x, x0, y0, x1, y1
    cdef double u, v, sx, sy, fx, fy, v00, v01, v10, v11
    cdef double inv_nx = 1.0 / nx, inv_ny = 1.0 / ny
    cdef const double* cx = &coeff_x[0]
    cdef const double* cy = &coeff_y[0]
    with nogil:
        for y in prange(ny, num_threads=n_threads, schedule="static"):
            v = y * inv_ny - 0.5
            for x in range(nx):
                u = x * inv_nx - 0.5
                sx = x + _field(cx, u, v)
                sy = y + _field(cy, u, v)
                if sx < 0:
                    sx = 0
                elif sx > nx - 1:
                    sx = nx - 1
                if sy < 0:
                    sy = 0
                elif sy > ny - 1:
                    sy = ny - 1
                x0 = <Py_ssize_t>floor(sx)
                y0 = <Py_ssize_t>floor(sy)
                x1 = x0 + 1 if x0 < nx - 1 else x0
                y1 = y0 + 1 if y0 < ny - 1 else y0
                fx = sx - x0
                fy = sy - y0
                if use_gain:
                    v00 = raw[y0, x0] * gain[y0, x0]
                    v01 = raw[y0, x1] * gain[y0, x1]
                    v10 = raw[y1, x0] * gain[y1, x0]
                    v11 = raw[y1, x1] * gain[y1, x1]
                else:
                    v00 = raw[y0, x0]
                    v01 = raw[y0, x1]
                    v10 = raw[y1, x0]
                    v11 = raw[y1, x1]
                out[y, x] += <float>(
                    (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11)
                )


cdef inline double _critical_exposure(double k, double voltage_scale) noexcept nogil:
    # Grant & Grigorieff (2015), eLife 4:e06980: Ne(k) = a k^b + c electrons/Å² at 300 kV.
    return (0.245 * pow(k, -1.665) + 2.81) * voltage_scale


def dose_accumulate_kernel(
    const float complex[:, ::1] group,
    float complex[:, ::1] acc,
    float[:, ::1] weight_sq,
    double dose,
    int n_frames,
    double pixel_size,
    double voltage_scale,
    int n_threads,
):
    """acc += W(k) group, weight_sq += n_frames W(k)² with W = exp(-dose / 2 Ne(k)).

    `group` is the rfft2 (ny, nx//2 + 1) of the sum of `n_frames` aligned frames whose
    mean accumulated exposure is `dose` (e/Å²); k in 1/Å from `pixel_size` (Å).
    """
    cdef Py_ssize_t ny = group.shape[0], nxh = group.shape[1]
    cdef Py_ssize_t nx = 2 * (nxh - 1)
    cdef Py_ssize_t i, j
    cdef double ky, kx, k, w
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            ky = (i if i <= ny // 2 else i - ny) / (ny * pixel_size)
            for j in range(nxh):
                kx = j / (nx * pixel_size)
                k = sqrt(kx * kx + ky * ky)
                if k == 0:
                    w = 1.0
                else:
                    w = exp(-dose / (2.0 * _critical_exposure(k, voltage_scale)))
                acc[i, j] = acc[i, j] + <float>w * group[i, j]
                weight_sq[i, j] += <float>(n_frames * w * w)


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
                    acc[i, j] = acc[i, j] * <float>sqrt(n_frames / weight_sq[i, j])
