# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Per-position kernels of ePIE and rPIE on complex64 object and probe.

One position of (r)ePIE is: exit wave ψ = P·O[patch] → Ψ = FFT(ψ) → modulus constraint
Ψ' = A·Ψ/|Ψ| on valid detector pixels → ψ' = IFFT(Ψ') → update O[patch] and P from
Δ = ψ' − ψ. The FFTs stay in scipy; each per-pixel pass here is one fused loop over rows
(prange, GIL released), where numpy would make five to ten passes with temporaries.

Complex arrays arrive as float32 views (ny, 2·nx): real and imaginary parts interleaved,
which is how numpy lays out complex64, so no copy is made.

`epie_positions_kernel` runs a whole iteration's positions without returning to Python
between them except for the two FFTs (an in-place plan's `forward` and `backward`,
unnormalised): three passes per position, each one row loop from `_epie_rows.h`. The
exit wave is not kept: the update recomputes P·O, which has not changed since.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc


cdef extern from "_epie_rows.h" nogil:
    void epie_exit_row(
        const float* probe, const float* obj, float* out, Py_ssize_t n,
        float* probe_max, float* obj_max,
    )
    double epie_modulus_row(
        float* wave, const float* amplitude, const unsigned char* valid, Py_ssize_t n, float s,
        float* terms,
    )
    void epie_update_row(
        float* obj, float* probe, const float* revised, Py_ssize_t n, int regularised,
        int update_probe, float wo_epie, float wp_epie, float a_obj, float b_obj,
        float a_probe, float b_probe,
    )


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
    cdef Py_ssize_t ny = probe.shape[0], nx = probe.shape[1] // 2
    cdef float* maxima = <float*>malloc(2 * ny * sizeof(float))
    if maxima == NULL:
        raise MemoryError()
    try:
        _exit_rows(obj, probe, y0, x0, out, maxima, n_threads)
        return _largest(maxima, ny), _largest(maxima + ny, ny)
    finally:
        free(maxima)


cdef void _exit_rows(
    const float[:, ::1] obj,
    const float[:, ::1] probe,
    Py_ssize_t y0,
    Py_ssize_t x0,
    float[:, ::1] out,
    float* maxima,
    int n_threads,
) noexcept nogil:
    """Exit wave rows in parallel; row i's max |P|² in maxima[i], max |O|² in maxima[ny + i]."""
    cdef Py_ssize_t ny = probe.shape[0], nx = probe.shape[1] // 2, i
    for i in prange(ny, num_threads=n_threads, schedule="static"):
        epie_exit_row(&probe[i, 0], &obj[y0 + i, 2 * x0], &out[i, 0], nx, &maxima[i], &maxima[ny + i])


cdef inline float _largest(const float* values, Py_ssize_t n) noexcept nogil:
    cdef float largest = 0.0
    cdef Py_ssize_t i
    for i in range(n):
        largest = values[i] if values[i] > largest else largest
    return largest


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
    cdef float* scratch = <float*>malloc(n_threads * amplitude.shape[1] * sizeof(float))
    if scratch == NULL:
        raise MemoryError()
    try:
        return _modulus_rows(wave_ft, amplitude, valid, 1.0, scratch, n_threads)
    finally:
        free(scratch)


cdef double _modulus_rows(
    float[:, ::1] wave,
    const float[:, ::1] amplitude,
    const unsigned char[:, ::1] valid,
    float scale,
    float* scratch,
    int n_threads,
) noexcept nogil:
    """`epie_modulus_row` on every row in parallel (`scale`: see _epie_rows.h); `scratch`
    holds a row of floats per thread."""
    cdef Py_ssize_t ny = amplitude.shape[0], nx = amplitude.shape[1], i
    cdef double error = 0.0
    for i in prange(ny, num_threads=n_threads, schedule="static"):
        error += epie_modulus_row(
            &wave[i, 0], &amplitude[i, 0], &valid[i, 0], nx, scale, scratch + threadid() * nx
        )
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


def epie_positions_kernel(
    float[:, ::1] obj,
    float[:, ::1] probe,
    float[:, ::1] wave,
    const float[:, :, ::1] amplitudes,
    const unsigned char[:, ::1] valid,
    const long long[:, ::1] positions,
    const long long[::1] order,
    object forward,
    object backward,
    float alpha,
    float beta,
    bint regularised,
    bint update_probe,
    int n_threads,
):
    """One (r)ePIE pass over the positions `order` lists, in place on obj and probe.

    Per position: exit wave P·O[patch] into `wave` (with max |P|², max |O|²), `forward()`
    (unnormalised FFT of `wave` in place), the modulus constraint with the orthonormal
    scale folded in, `backward()` (unnormalised inverse FFT in place: the revised exit
    wave), the update. Returns Σ positions Σ valid (|Ψ| − √I)², Ψ orthonormal.
    """
    cdef Py_ssize_t ny = probe.shape[0], nx = probe.shape[1] // 2, k, i, index, y0, x0
    cdef float scale = <float>(1.0 / sqrt(<double>(ny * nx)))
    cdef float probe_max, obj_max, wo_epie, wp_epie
    cdef double error = 0.0
    cdef const float[:, ::1] amplitude
    cdef float* maxima = <float*>malloc((2 * ny + n_threads * nx) * sizeof(float))
    if maxima == NULL:
        raise MemoryError()
    try:
        for k in range(order.shape[0]):
            index = order[k]
            y0 = positions[index, 0]
            x0 = positions[index, 1]
            with nogil:
                _exit_rows(obj, probe, y0, x0, wave, maxima, n_threads)
                probe_max = _largest(maxima, ny)
                obj_max = _largest(maxima + ny, ny)
            forward()
            amplitude = amplitudes[index]
            with nogil:
                error += _modulus_rows(
                    wave, amplitude, valid, scale, maxima + 2 * ny, n_threads
                )
            backward()
            wo_epie = alpha / probe_max if probe_max > 0 else alpha
            wp_epie = beta / obj_max if obj_max > 0 else beta
            with nogil:
                for i in prange(ny, num_threads=n_threads, schedule="static"):
                    epie_update_row(
                        &obj[y0 + i, 2 * x0], &probe[i, 0], &wave[i, 0], nx, regularised,
                        update_probe, wo_epie, wp_epie, 1.0 - alpha, alpha * probe_max,
                        1.0 - beta, beta * obj_max,
                    )
    finally:
        free(maxima)
    return error


cdef extern from "_epie_blocks.h" nogil:
    ctypedef void (*epie_fft_execute)(void* plan, void* inp, void* out) noexcept nogil
    ctypedef struct epie_blocks:
        epie_fft_execute execute
        void* row_forward
        void* row_backward
        void* row_forward_last
        void* row_backward_last
        void* col_forward
        void* col_backward
        void* col_forward_last
        void* col_backward_last
        Py_ssize_t ny, nx, rows, cols, modes, stride
        int subpixel
        float fy, fx
    void epie_forward_rows(
        const epie_blocks* b, Py_ssize_t block, const float* probe, float* wave,
        const float* obj, Py_ssize_t obj_stride, const float* amplitude, float* power,
        float* probe_max, float* obj_max,
    )
    double epie_columns(
        const epie_blocks* b, Py_ssize_t block, float* wave, const float* amplitude,
        const unsigned char* valid, float s, float* scratch,
    )
    void epie_inverse_rows(
        const epie_blocks* b, Py_ssize_t block, float* probe, float* wave, float* obj,
        Py_ssize_t obj_stride, int regularised, int update_probe, float wo_epie,
        float wp_epie, float a_obj, float b_obj, float a_probe, float b_probe, float* scratch,
    )
    void epie_block_fft_pair(const epie_blocks* b, float* wave)
    void epie_spread_rows(
        const epie_blocks* b, Py_ssize_t block, float* obj, Py_ssize_t obj_stride,
        const float* step,
    )


cdef epie_blocks _blocks(
    size_t execute, const unsigned long long[::1] plans, Py_ssize_t modes, Py_ssize_t ny,
    Py_ssize_t nx, Py_ssize_t stride, Py_ssize_t rows, Py_ssize_t cols,
):
    """The plans and shape of the block pass as `_epie_blocks.h` takes them."""
    cdef epie_blocks b
    b.execute = <epie_fft_execute><void*>execute
    b.row_forward = <void*>plans[0]
    b.row_backward = <void*>plans[1]
    b.row_forward_last = <void*>plans[2]
    b.row_backward_last = <void*>plans[3]
    b.col_forward = <void*>plans[4]
    b.col_backward = <void*>plans[5]
    b.col_forward_last = <void*>plans[6]
    b.col_backward_last = <void*>plans[7]
    b.modes = modes
    b.ny = ny
    b.nx = nx
    b.stride = stride
    b.rows = rows
    b.cols = cols
    b.subpixel = 0
    b.fy = 0.0
    b.fx = 0.0
    return b


def block_fft_pairs_kernel(
    float[:, :, ::1] wave,
    Py_ssize_t nx,
    size_t execute,
    const unsigned long long[::1] plans,
    Py_ssize_t rows,
    Py_ssize_t cols,
    Py_ssize_t repeats,
):
    """`repeats` unnormalised forward and inverse FFTs of every mode of `wave` in place,
    block by block as the fused pass runs them (its FFTs alone: a floor to compare with)."""
    cdef epie_blocks b = _blocks(
        execute, plans, wave.shape[0], wave.shape[1], nx, wave.shape[2] // 2, rows, cols
    )
    cdef Py_ssize_t k
    cdef float* at = &wave[0, 0, 0]
    with nogil:
        for k in range(repeats):
            epie_block_fft_pair(&b, at)


cdef inline Py_ssize_t _next_exit_lag(
    Py_ssize_t dy, Py_ssize_t dx, Py_ssize_t ny, Py_ssize_t nx, Py_ssize_t rows, Py_ssize_t n_rows
) noexcept nogil:
    """How many row blocks the next position's exit wave must trail this one's update.

    The next patch's row i is this patch's row i + dy. Where the patches overlap and
    dy > 0, that row is updated ceil(dy / rows) blocks after row i; otherwise every row
    the next exit wave reads (and its probe rows) is final once this block is updated.
    """
    if dy <= 0 or dy >= ny or dx <= -nx or dx >= nx:
        return 0
    return min((dy + rows - 1) // rows, n_rows)


def epie_blocks_kernel(
    float[:, ::1] obj,
    float[:, :, ::1] probe,
    float[:, :, ::1] wave,
    const float[:, :, ::1] amplitudes,
    const unsigned char[:, ::1] valid,
    const long long[:, ::1] positions,
    const long long[::1] order,
    const float[:, ::1] fractions,
    bint subpixel,
    size_t execute,
    const unsigned long long[::1] plans,
    Py_ssize_t rows,
    Py_ssize_t cols,
    float alpha,
    float beta,
    bint regularised,
    bint update_probe,
    int n_threads,
):
    """One (r)ePIE pass over the positions `order` lists, with probe modes, in place.

    `probe` (modes, ny, 2·nx) and `wave` (modes, ny, 2·stride) are float views of
    complex64 (the wave's rows padded to `stride` ≥ nx); `execute` is the
    address of fftwf_execute_dft and `plans` the eight plans `_epie_blocks.h` names
    (row forward, row backward, their last-block versions, the same for columns), for
    blocks of `rows` rows and `cols` columns. The blocks of each pass run on `n_threads`
    OpenMP threads (1: no parallel region at all; then, with integer positions, the
    next position's exit wave and row FFTs are formed inside this one's update pass,
    each row block right after the rows it reads are updated). `subpixel`: each position's patch is
    the bilinear interpolation at `fractions[index]` (row, column, in [0, 1)) from its
    corner, (ny + 1, nx + 1) object pixels. Returns Σ positions Σ valid (|Ψ| − √I)²,
    |Ψ|² the orthonormal far-field intensity summed over modes.
    """
    cdef epie_blocks b = _blocks(
        execute, plans, probe.shape[0], probe.shape[1], probe.shape[2] // 2,
        wave.shape[2] // 2, rows, cols,
    )
    b.subpixel = subpixel
    cdef Py_ssize_t n_spread = (b.ny + rows) // rows
    cdef Py_ssize_t n_rows = (b.ny + rows - 1) // rows, n_cols = (b.nx + cols - 1) // cols
    cdef Py_ssize_t k, index, y0, x0, block, pblock, lag, obj_stride = obj.shape[1]
    cdef bint formed = False
    cdef float* next_at
    cdef Py_ssize_t per_thread = 5 * b.nx + 4 * cols
    cdef float scale = <float>(1.0 / sqrt(<double>(b.ny * b.nx)))
    cdef float probe_max, obj_max, wo_epie, wp_epie
    cdef double error = 0.0, position_error
    cdef int threads = n_threads if n_threads > 1 else 1
    cdef float* maxima = <float*>malloc(
        (2 * n_rows + n_cols + threads * per_thread) * sizeof(float)
    )
    cdef double* errors = <double*>malloc(n_cols * sizeof(double))
    cdef float* scratch
    cdef float* obj_at
    cdef float* probe_at = &probe[0, 0, 0]
    cdef float* wave_at = &wave[0, 0, 0]
    if maxima == NULL or errors == NULL:
        free(maxima)
        free(errors)
        raise MemoryError()
    scratch = maxima + 2 * n_rows + n_cols
    try:
        with nogil:
            for k in range(order.shape[0]):
                index = order[k]
                y0 = positions[index, 0]
                x0 = positions[index, 1]
                obj_at = &obj[y0, 2 * x0]
                if subpixel:
                    b.fy = fractions[index, 0]
                    b.fx = fractions[index, 1]
                if not formed and threads == 1:
                    for block in range(n_rows):
                        epie_forward_rows(
                            &b, block, probe_at, wave_at, obj_at, obj_stride,
                            &amplitudes[index, 0, 0], scratch, &maxima[block],
                            &maxima[n_rows + block],
                        )
                elif not formed:
                    for pblock in prange(n_rows, num_threads=threads, schedule="static"):
                        epie_forward_rows(
                            &b, pblock, probe_at, wave_at, obj_at, obj_stride,
                            &amplitudes[index, 0, 0], scratch + threadid() * per_thread,
                            &maxima[pblock], &maxima[n_rows + pblock],
                        )
                if threads == 1:
                    for block in range(n_cols):
                        errors[block] = epie_columns(
                            &b, block, wave_at, &amplitudes[index, 0, 0], &valid[0, 0], scale,
                            scratch,
                        )
                else:
                    for pblock in prange(n_cols, num_threads=threads, schedule="static"):
                        errors[pblock] = epie_columns(
                            &b, pblock, wave_at, &amplitudes[index, 0, 0], &valid[0, 0], scale,
                            scratch + threadid() * per_thread,
                        )
                probe_max = _largest(maxima, n_rows)
                obj_max = _largest(maxima + n_rows, n_rows)
                position_error = 0.0
                for block in range(n_cols):
                    position_error = position_error + errors[block]
                error += position_error
                wo_epie = alpha / probe_max if probe_max > 0 else alpha
                wp_epie = beta / obj_max if obj_max > 0 else beta
                formed = threads == 1 and not subpixel and k + 1 < order.shape[0]
                if formed:
                    # The next position's exit wave, each row block as soon as the rows it
                    # reads are final (see _next_exit_lag), while they are still in cache.
                    next_at = &obj[positions[order[k + 1], 0], 2 * positions[order[k + 1], 1]]
                    lag = _next_exit_lag(
                        positions[order[k + 1], 0] - y0, positions[order[k + 1], 1] - x0,
                        b.ny, b.nx, rows, n_rows,
                    )
                    for block in range(n_rows + lag):
                        if block < n_rows:
                            epie_inverse_rows(
                                &b, block, probe_at, wave_at, obj_at, obj_stride, regularised,
                                update_probe, wo_epie, wp_epie, 1.0 - alpha, alpha * probe_max,
                                1.0 - beta, beta * obj_max, scratch,
                            )
                        if block >= lag:
                            epie_forward_rows(
                                &b, block - lag, probe_at, wave_at, next_at, obj_stride,
                                &amplitudes[order[k + 1], 0, 0], scratch, &maxima[block - lag],
                                &maxima[n_rows + block - lag],
                            )
                elif threads == 1:
                    for block in range(n_rows):
                        epie_inverse_rows(
                            &b, block, probe_at, wave_at, obj_at, obj_stride, regularised,
                            update_probe, wo_epie, wp_epie, 1.0 - alpha, alpha * probe_max,
                            1.0 - beta, beta * obj_max, scratch,
                        )
                else:
                    for pblock in prange(n_rows, num_threads=threads, schedule="static"):
                        epie_inverse_rows(
                            &b, pblock, probe_at, wave_at, obj_at, obj_stride, regularised,
                            update_probe, wo_epie, wp_epie, 1.0 - alpha, alpha * probe_max,
                            1.0 - beta, beta * obj_max, scratch + threadid() * per_thread,
                        )
                if subpixel:
                    if threads == 1:
                        for block in range(n_spread):
                            epie_spread_rows(&b, block, obj_at, obj_stride, wave_at)
                    else:
                        for pblock in prange(n_spread, num_threads=threads, schedule="static"):
                            epie_spread_rows(&b, pblock, obj_at, obj_stride, wave_at)
    finally:
        free(maxima)
        free(errors)
    return error
