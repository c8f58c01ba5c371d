# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Per-position kernels of ePIE and rPIE on complex64 object and probe.

One position of (r)ePIE is: exit wave ψ = P·O[patch] → Ψ = FFT(ψ) → modulus constraint
Ψ' = A·Ψ/|Ψ| on valid detector pixels → ψ' = IFFT(Ψ') → update O[patch] and P from
Δ = ψ' − ψ. The FFTs stay in scipy; each per-pixel pass here is one fused loop over rows
(prange, GIL released), where numpy would make five to ten passes with temporaries.

Complex arrays arrive as float32 views (ny, 2·nx): real and imaginary parts interleaved,
which is how numpy lays out complex64, so no copy is made.
"""

from cython.parallel cimport prange
from libc.math cimport sqrtf
from libc.stdlib cimport free, malloc


def exit_wave_kernel(
    const float[:, ::1] obj,
    const float[:, ::1] probe,
    Py_ssize_t y0,
    Py_ssize_t x0,
    float[:, ::1] out,
    int n_threads,
):
    """out = probe · obj[y0:y0+n, x0:x0+m] (the exit wave at one scan position).

    Returns (max |P|², max |O[patch]|²), read in the same pass: the ePIE/rPIE update
    that follows needs both, and nothing changes P or O in between.
    """
    cdef Py_ssize_t ny = probe.shape[0], nx = probe.shape[1] // 2, i, j, c
    cdef float pr, pim, o_r, o_i, p2, o2, pm, om
    cdef float probe_max = 0.0, obj_max = 0.0
    cdef float* probe_rows = <float*>malloc(ny * sizeof(float))
    cdef float* obj_rows = <float*>malloc(ny * sizeof(float))
    if probe_rows == NULL or obj_rows == NULL:
        free(probe_rows)
        free(obj_rows)
        raise MemoryError()
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            pm = 0.0
            om = 0.0
            for j in range(nx):
                c = 2 * (x0 + j)
                pr = probe[i, 2 * j]
                pim = probe[i, 2 * j + 1]
                o_r = obj[y0 + i, c]
                o_i = obj[y0 + i, c + 1]
                out[i, 2 * j] = pr * o_r - pim * o_i
                out[i, 2 * j + 1] = pr * o_i + pim * o_r
                p2 = pr * pr + pim * pim
                o2 = o_r * o_r + o_i * o_i
                pm = p2 if p2 > pm else pm
                om = o2 if o2 > om else om
            probe_rows[i] = pm
            obj_rows[i] = om
        for i in range(ny):
            probe_max = probe_rows[i] if probe_rows[i] > probe_max else probe_max
            obj_max = obj_rows[i] if obj_rows[i] > obj_max else obj_max
        free(probe_rows)
        free(obj_rows)
    return probe_max, obj_max


def extract_patch_kernel(
    const float[:, ::1] obj, Py_ssize_t y0, Py_ssize_t x0, float[:, ::1] out, int n_threads
):
    """out = obj[y0:y0+n, x0:x0+m]."""
    cdef Py_ssize_t ny = out.shape[0], width = out.shape[1], i, j
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            for j in range(width):
                out[i, j] = obj[y0 + i, 2 * x0 + j]


def add_intensity_kernel(
    float[:, ::1] total, const float[:, ::1] probe, Py_ssize_t y0, Py_ssize_t x0, int n_threads
):
    """total[y0:y0+n, x0:x0+m] += |probe|² (the illumination map of a scan)."""
    cdef Py_ssize_t ny = probe.shape[0], nx = probe.shape[1] // 2, i, j
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            for j in range(nx):
                total[y0 + i, x0 + j] += (
                    probe[i, 2 * j] * probe[i, 2 * j] + probe[i, 2 * j + 1] * probe[i, 2 * j + 1]
                )


def modulus_constraint_kernel(
    float[:, ::1] wave_ft,
    const float[:, ::1] amplitude,
    const unsigned char[:, ::1] valid,
    int n_threads,
):
    """Replace |Ψ| by the measured amplitude on valid pixels, keeping the phase; masked
    pixels keep the current estimate. Returns Σ_valid (|Ψ| − A)², the error before."""
    cdef Py_ssize_t ny = amplitude.shape[0], nx = amplitude.shape[1], i, j
    cdef float re, im, modulus, target, scale
    cdef double error = 0.0
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            for j in range(nx):
                if valid[i, j]:
                    re = wave_ft[i, 2 * j]
                    im = wave_ft[i, 2 * j + 1]
                    modulus = sqrtf(re * re + im * im)
                    target = amplitude[i, j]
                    error += (modulus - target) * (modulus - target)
                    if modulus > 1e-30:
                        scale = target / modulus
                        wave_ft[i, 2 * j] = re * scale
                        wave_ft[i, 2 * j + 1] = im * scale
                    else:
                        # No phase to keep: a real field of the measured amplitude.
                        wave_ft[i, 2 * j] = target
                        wave_ft[i, 2 * j + 1] = 0.0
    return error


def update_kernel(
    float[:, ::1] obj,
    float[:, ::1] probe,
    Py_ssize_t y0,
    Py_ssize_t x0,
    const float[:, ::1] exit_wave,
    const float[:, ::1] revised,
    float alpha,
    float beta,
    float probe_max,
    float obj_max,
    bint regularised,
    bint update_probe,
    int n_threads,
):
    """Object and probe updates from Δ = revised − exit_wave at one position.

    ePIE (Maiden & Rodenburg 2009): O += α P*Δ / max|P|², P += β O*Δ / max|O|².
    rPIE (Maiden, Johnson & Li 2017): O += P*Δ / ((1−α)|P|² + α max|P|²), and the same
    form for the probe with β. Both updates use the object before this position's update;
    `probe_max`, `obj_max` are the maxima `exit_wave_kernel` returned for this position.
    """
    cdef Py_ssize_t ny = probe.shape[0], nx = probe.shape[1] // 2, i, j, c
    cdef float dr, di, pr, pim, o_r, o_i, wo, wp
    cdef float wo_epie = alpha / probe_max if probe_max > 0 else alpha
    cdef float wp_epie = beta / obj_max if obj_max > 0 else beta
    cdef float a_obj = 1.0 - alpha, b_obj = alpha * probe_max
    cdef float a_probe = 1.0 - beta, b_probe = beta * obj_max
    with nogil:
        for i in prange(ny, num_threads=n_threads, schedule="static"):
            for j in range(nx):
                c = 2 * (x0 + j)
                dr = revised[i, 2 * j] - exit_wave[i, 2 * j]
                di = revised[i, 2 * j + 1] - exit_wave[i, 2 * j + 1]
                pr = probe[i, 2 * j]
                pim = probe[i, 2 * j + 1]
                o_r = obj[y0 + i, c]
                o_i = obj[y0 + i, c + 1]
                if regularised:
                    wo = 1.0 / (a_obj * (pr * pr + pim * pim) + b_obj)
                    wp = 1.0 / (a_probe * (o_r * o_r + o_i * o_i) + b_probe)
                else:
                    wo = wo_epie
                    wp = wp_epie
                # O += wo·conj(P)·Δ ; P += wp·conj(O)·Δ (O before its update)
                obj[y0 + i, c] = o_r + wo * (pr * dr + pim * di)
                obj[y0 + i, c + 1] = o_i + wo * (pr * di - pim * dr)
                if update_probe:
                    probe[i, 2 * j] = pr + wp * (o_r * dr + o_i * di)
                    probe[i, 2 * j + 1] = pim + wp * (o_r * di - o_i * dr)
