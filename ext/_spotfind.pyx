# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""DIALS "dispersion" spot-finding threshold and run-length connected components.

The threshold streams: each band of rows keeps per-column running sums (count, sum) of
the (2k+1) rows around the current row, and sums those along the row over (2k+1)
columns, so every pixel is touched O(1) times and no full-frame summed-area table is
built. Integer frames take the vectorised 32-bit rows of `include/_spotfind_rows.h`
(rows whose window holds a value too large for them take the 64-bit rows here); float32
frames take the double rows here. Bands run in parallel with the GIL released.

Pixels above `max_valid` (the detector's overflow value 2^n - 1, counts beyond its
saturation) are masked frame by frame, and counted as each row is screened: by the
masked packed rows for the rows whose window holds one, and by the 64-bit rows here.
No second pass over the frame, their counts never reach a sum, and a frame without them
runs the unmasked packed rows, which never compare a value with max_valid.
"""

from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memset

import numpy as np

from _shared cimport mx_pixel_t


# The packed 32-bit rows for integer frames, in C so gcc vectorises them (see the header).
cdef extern from "_spotfind_rows.h" nogil:
    ctypedef struct spot_params:
        double gain
        double sigma_background
        double sigma_strong
        double global_threshold
        int32_t kernel_size
        int32_t min_local
        uint32_t max_valid
    # Unmasked rows (stop at a row holding a valid value above max_valid) and masked rows
    # (mask and count those values), for each pixel type.
    Py_ssize_t spot_u16_band(
        const uint16_t* image, const unsigned char* valid, unsigned char* out,
        Py_ssize_t ny, Py_ssize_t nx, Py_ssize_t row_start, Py_ssize_t row_stop,
        const spot_params* params, uint32_t* work, Py_ssize_t* bright_row,
        int64_t* overloads)
    Py_ssize_t spot_u16m_band(
        const uint16_t* image, const unsigned char* valid, unsigned char* out,
        Py_ssize_t ny, Py_ssize_t nx, Py_ssize_t row_start, Py_ssize_t row_stop,
        const spot_params* params, uint32_t* work, Py_ssize_t* bright_row,
        int64_t* overloads)
    Py_ssize_t spot_u32_band(
        const uint32_t* image, const unsigned char* valid, unsigned char* out,
        Py_ssize_t ny, Py_ssize_t nx, Py_ssize_t row_start, Py_ssize_t row_stop,
        const spot_params* params, uint32_t* work, Py_ssize_t* bright_row,
        int64_t* overloads)
    Py_ssize_t spot_u32m_band(
        const uint32_t* image, const unsigned char* valid, unsigned char* out,
        Py_ssize_t ny, Py_ssize_t nx, Py_ssize_t row_start, Py_ssize_t row_stop,
        const spot_params* params, uint32_t* work, Py_ssize_t* bright_row,
        int64_t* overloads)


ctypedef fused acc_t:
    long long
    double


cdef inline bint _used(mx_pixel_t value, unsigned char valid, double max_valid) noexcept nogil:
    """A pixel counts when its mask flag is set and its value is at most max_valid.

    Integer values compare as uint32, as the packed C rows do (a negative int32, a
    detector flag, is then above any max_valid below 2^32 - 1); a NaN is never above.
    """
    if mx_pixel_t is float:
        return valid != 0 and not (value > max_valid)
    else:
        return valid != 0 and <double>(<uint32_t>value) <= max_valid


cdef inline void _update_columns(
    const mx_pixel_t* add_row, const unsigned char* add_valid,
    const mx_pixel_t* remove_row, const unsigned char* remove_valid,
    acc_t* count, acc_t* total, Py_ssize_t nx, double max_valid,
) noexcept nogil:
    """Move the column sums down one row: add one image row, remove another (or NULL)."""
    cdef Py_ssize_t c
    cdef bint add_used, remove_used
    # Selects, not products with the mask: a masked NaN must not poison the sums.
    if add_row != NULL and remove_row != NULL:
        for c in range(nx):
            add_used = _used(add_row[c], add_valid[c], max_valid)
            remove_used = _used(remove_row[c], remove_valid[c], max_valid)
            count[c] += <acc_t>add_used - <acc_t>remove_used
            total[c] += ((<acc_t>add_row[c] if add_used else 0)
                         - (<acc_t>remove_row[c] if remove_used else 0))
    elif add_row != NULL:
        for c in range(nx):
            add_used = _used(add_row[c], add_valid[c], max_valid)
            count[c] += add_used
            total[c] += <acc_t>add_row[c] if add_used else 0
    elif remove_row != NULL:
        for c in range(nx):
            remove_used = _used(remove_row[c], remove_valid[c], max_valid)
            count[c] -= remove_used
            total[c] -= <acc_t>remove_row[c] if remove_used else 0


cdef bint _is_strong(
    const mx_pixel_t[:, ::1] image, const unsigned char[:, ::1] valid, Py_ssize_t r,
    Py_ssize_t c, int k, double gain, double sigma_background, double sigma_strong,
    double global_threshold, double max_valid,
) noexcept nogil:
    """The full DIALS test for a pixel that passed the screen (rare).

    Same operations in the same order as the numpy reference, so results agree bit for
    bit. The window's sums are recomputed here, only for these few pixels.
    """
    cdef double p = <double>image[r, c]
    cdef double m = 0.0, x = 0.0, y = 0.0, v, a, b
    cdef Py_ssize_t i, j
    cdef Py_ssize_t i0 = r - k if r - k > 0 else 0
    cdef Py_ssize_t i1 = r + k + 1 if r + k + 1 < image.shape[0] else image.shape[0]
    cdef Py_ssize_t j0 = c - k if c - k > 0 else 0
    cdef Py_ssize_t j1 = c + k + 1 if c + k + 1 < image.shape[1] else image.shape[1]
    for i in range(i0, i1):
        for j in range(j0, j1):
            if _used(image[i, j], valid[i, j], max_valid):
                v = <double>image[i, j]
                m += 1.0
                x += v
                y += v * v
    b = m * p - x
    if not (b > 0.0 and b > sigma_strong * sqrt(gain * x * m) and p > global_threshold):
        return False
    a = m * y - x * x - gain * x * (m - 1.0)
    return a > 0.0 and a > gain * x * sigma_background * sqrt(2.0 * (m - 1.0))


cdef long long _threshold_band(
    const mx_pixel_t[:, ::1] image, const unsigned char[:, ::1] valid, unsigned char[:, ::1] out,
    Py_ssize_t row_start, Py_ssize_t row_stop, int k, double gain, double sigma_background,
    double sigma_strong, long long min_local, double global_threshold, double max_valid,
    acc_t* count, acc_t* total,
) noexcept nogil:
    """Threshold rows [row_start, row_stop); returns their overloads (valid pixels above
    max_valid).

    `count` and `total` hold nx + 2k column sums, column c at index c + k, zero-padded
    on both sides so the sliding window along the row needs no edge tests. Cheap integer
    tests (valid, above the local mean) reject almost every pixel before the full test.
    """
    cdef Py_ssize_t ny = image.shape[0], nx = image.shape[1]
    cdef Py_ssize_t r, c, lo, hi, width = 2 * k
    cdef acc_t m, x, b
    cdef bint used
    cdef long long overloads = 0
    cdef double bd, screen = sigma_strong * sigma_strong * gain * (1.0 - 1e-9)
    cdef const mx_pixel_t* row
    cdef const unsigned char* row_valid
    cdef unsigned char* row_out
    lo = row_start - k if row_start - k > 0 else 0
    hi = row_start + k + 1 if row_start + k + 1 < ny else ny
    for r in range(lo, hi):
        _update_columns(&image[r, 0], &valid[r, 0], <const mx_pixel_t*>NULL,
                        <const unsigned char*>NULL, count + k, total + k, nx, max_valid)
    for r in range(row_start, row_stop):
        row = &image[r, 0]
        row_valid = &valid[r, 0]
        row_out = &out[r, 0]
        m = 0
        x = 0
        for c in range(width):
            m += count[c]
            x += total[c]
        for c in range(nx):
            m += count[c + width]
            x += total[c + width]
            # Branch-free screen: above the local mean by more than sigma_strong standard
            # deviations, squared (a hair loose, so it never drops a pixel the exact test
            # keeps); masked pixels have b = -x <= 0.
            used = _used(row[c], row_valid[c], max_valid)
            overloads += row_valid[c] != 0 and not used
            b = m * (<acc_t>row[c] if used else 0) - x
            bd = <double>b
            row_out[c] = (b > 0) & (bd * bd > screen * (<double>x * <double>m)) & (m >= min_local)
            m -= count[c]
            x -= total[c]
        for c in range(nx):
            if row_out[c]:
                row_out[c] = _is_strong(
                    image, valid, r, c, k, gain, sigma_background, sigma_strong,
                    global_threshold, max_valid,
                )
        if r + 1 < row_stop:
            _update_columns(
                &image[r + k + 1, 0] if r + k + 1 < ny else <const mx_pixel_t*>NULL,
                &valid[r + k + 1, 0] if r + k + 1 < ny else <const unsigned char*>NULL,
                &image[r - k, 0] if r - k >= 0 else <const mx_pixel_t*>NULL,
                &valid[r - k, 0] if r - k >= 0 else <const unsigned char*>NULL,
                count + k, total + k, nx, max_valid,
            )
    return overloads


cdef inline Py_ssize_t _packed_rows(
    const mx_pixel_t[:, ::1] image, const unsigned char[:, ::1] valid, unsigned char[:, ::1] out,
    Py_ssize_t row_start, Py_ssize_t row_stop, const spot_params* params, uint32_t* work,
    Py_ssize_t* bright_row, int64_t* overloads, bint masked,
) noexcept nogil:
    """The packed C rows of this pixel type (masked or not); the first row not done."""
    cdef Py_ssize_t ny = image.shape[0], nx = image.shape[1]
    if mx_pixel_t is uint16_t:
        if masked:
            return spot_u16m_band(&image[0, 0], &valid[0, 0], &out[0, 0], ny, nx, row_start,
                                  row_stop, params, work, bright_row, overloads)
        return spot_u16_band(&image[0, 0], &valid[0, 0], &out[0, 0], ny, nx, row_start,
                             row_stop, params, work, bright_row, overloads)
    elif mx_pixel_t is float:
        return row_start  # float32 frames take _threshold_band directly
    else:
        # int32 frames as uint32: negative values exceed the limit, so fall back.
        if masked:
            return spot_u32m_band(<const uint32_t*>&image[0, 0], &valid[0, 0], &out[0, 0],
                                  ny, nx, row_start, row_stop, params, work, bright_row,
                                  overloads)
        return spot_u32_band(<const uint32_t*>&image[0, 0], &valid[0, 0], &out[0, 0], ny, nx,
                             row_start, row_stop, params, work, bright_row, overloads)


cdef long long _integer_band(
    const mx_pixel_t[:, ::1] image, const unsigned char[:, ::1] valid, unsigned char[:, ::1] out,
    Py_ssize_t row_start, Py_ssize_t row_stop, const spot_params* params,
    uint32_t* work, long long* sums, Py_ssize_t columns, double max_valid,
) noexcept nogil:
    """Rows [row_start, row_stop) of an integer frame; returns their overloads.

    The unmasked packed rows in C; the rows whose window holds an overload in the masked
    packed rows; the rows whose window holds a value beyond the packing limit in the
    64-bit rows here."""
    cdef Py_ssize_t r = row_start, stop, bright_row = 0
    cdef int64_t overloads = 0
    cdef int k = params.kernel_size
    if mx_pixel_t is float:
        return 0  # float32 frames take _threshold_band directly
    else:
        while r < row_stop:
            r = _packed_rows(image, valid, out, r, row_stop, params, work, &bright_row,
                             &overloads, False)
            if r >= row_stop:
                return overloads
            # Row bright_row holds an overload or a bright value: the rows whose window
            # holds it, masked (they stop again at once for a bright value).
            stop = bright_row + k + 1 if bright_row + k + 1 < row_stop else row_stop
            r = _packed_rows(image, valid, out, r, stop, params, work, &bright_row,
                             &overloads, True)
            if r >= stop:
                continue
            # At least 64 rows at a time, so frames bright (or negative) in most rows spend
            # little on packed rows restarted only to stop again.
            stop = bright_row + k + 1
            if stop < r + 64:
                stop = r + 64
            if stop > row_stop:
                stop = row_stop
            memset(sums, 0, 2 * columns * sizeof(long long))
            overloads += _threshold_band(
                image, valid, out, r, stop, k, params.gain, params.sigma_background,
                params.sigma_strong, params.min_local, params.global_threshold, max_valid,
                sums, sums + columns,
            )
            r = stop
        return overloads


def dispersion_threshold_kernel(
    const mx_pixel_t[:, ::1] image,
    const unsigned char[:, ::1] valid,
    unsigned char[:, ::1] out,
    double gain,
    double sigma_background,
    double sigma_strong,
    int kernel_size,
    int min_local,
    double global_threshold,
    double max_valid,
    int n_threads,
):
    """Strong-pixel mask into `out` (1 = strong); returns the number of valid pixels
    above `max_valid` (masked for this frame). Shapes and dtypes checked by the caller.

    Integer images accumulate in packed 32-bit sums where exact, else in 64-bit integers;
    float32 images in doubles.
    """
    cdef Py_ssize_t ny = image.shape[0], nx = image.shape[1]
    cdef int n_bands = n_threads * 4 if ny >= 64 * n_threads else 1
    cdef Py_ssize_t band_rows = (ny + n_bands - 1) // n_bands
    cdef Py_ssize_t columns = nx + 2 * kernel_size + 1
    cdef Py_ssize_t start, stop
    cdef int band
    cdef long long[:, ::1] int_sums
    cdef double[:, ::1] float_sums
    cdef uint32_t[:, ::1] work
    cdef long long[::1] overloads = np.zeros(n_bands, dtype=np.int64)
    cdef spot_params params
    params.gain = gain
    params.sigma_background = sigma_background
    params.sigma_strong = sigma_strong
    params.global_threshold = global_threshold
    params.kernel_size = kernel_size
    params.min_local = min_local
    # The packed rows compare as uint32: any max_valid at or above 2^32 - 1 masks nothing.
    params.max_valid = <uint32_t>(max_valid if max_valid < 4294967295.0 else 4294967295.0)
    if ny == 0 or nx == 0:
        return 0
    if mx_pixel_t is float:
        float_sums = np.zeros((n_bands, 2 * columns), dtype=np.float64)
    else:
        int_sums = np.zeros((n_bands, 2 * columns), dtype=np.int64)
        work = np.zeros((n_bands, columns), dtype=np.uint32)
    with nogil:
        for band in prange(n_bands, num_threads=n_threads, schedule="dynamic"):
            start = band * band_rows
            stop = start + band_rows
            if stop > ny:
                stop = ny
            if start >= stop:
                continue
            if mx_pixel_t is float:
                overloads[band] = _threshold_band(
                    image, valid, out, start, stop, kernel_size, gain, sigma_background,
                    sigma_strong, min_local, global_threshold, max_valid,
                    &float_sums[band, 0], &float_sums[band, columns],
                )
            else:
                overloads[band] = _integer_band(
                    image, valid, out, start, stop, &params, &work[band, 0],
                    &int_sums[band, 0], columns, max_valid,
                )
    return int(np.asarray(overloads).sum())


cdef struct Run:
    Py_ssize_t row
    Py_ssize_t first
    Py_ssize_t last


cdef inline Py_ssize_t _find(Py_ssize_t* parent, Py_ssize_t i) noexcept nogil:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def label_spots_kernel(const mx_pixel_t[:, ::1] image, const unsigned char[:, ::1] strong):
    """8-connected components of the strong mask, by runs along rows.

    Returns (n_pixels, sum, sum_x, sum_y, peak) per component, weighted by counts, with
    pixel centres at +0.5 (DIALS convention). Only strong pixels are visited after the
    single scan that finds the runs.
    """
    cdef Py_ssize_t ny = strong.shape[0], nx = strong.shape[1]
    cdef Py_ssize_t capacity = 1024, n_runs = 0, r, c, i, j, prev_start = 0, prev_stop = 0
    cdef Py_ssize_t row_start, root, other, n_labels = 0
    cdef Run* runs = <Run*> malloc(capacity * sizeof(Run))
    cdef Run* grown
    cdef Py_ssize_t* parent = NULL
    cdef Py_ssize_t* label_of = NULL
    cdef bint failed = False
    cdef int[::1] n_pixels_view
    cdef double[::1] sums_view, sum_x_view, sum_y_view, peak_view
    if runs == NULL:
        raise MemoryError()
    try:
        with nogil:
            for r in range(ny):
                row_start = n_runs
                c = 0
                while c < nx:
                    if strong[r, c]:
                        if n_runs == capacity:
                            capacity *= 2
                            grown = <Run*> realloc(runs, capacity * sizeof(Run))
                            if grown == NULL:
                                failed = True
                                break
                            runs = grown
                        runs[n_runs].row = r
                        runs[n_runs].first = c
                        while c < nx and strong[r, c]:
                            c += 1
                        runs[n_runs].last = c - 1
                        n_runs += 1
                    else:
                        c += 1
                if failed:
                    break
            if not failed:
                parent = <Py_ssize_t*> malloc((n_runs + 1) * sizeof(Py_ssize_t))
                label_of = <Py_ssize_t*> malloc((n_runs + 1) * sizeof(Py_ssize_t))
                failed = parent == NULL or label_of == NULL
        if failed:
            raise MemoryError()
        with nogil:
            for i in range(n_runs):
                parent[i] = i
                label_of[i] = -1
            # Runs are sorted by row, then column: merge each run with the touching runs
            # of the previous row (8-connectivity: columns may be one apart diagonally).
            prev_start = 0
            prev_stop = 0
            i = 0
            while i < n_runs:
                r = runs[i].row
                row_start = i
                while i < n_runs and runs[i].row == r:
                    i += 1
                if row_start > 0 and runs[row_start - 1].row == r - 1:
                    prev_stop = row_start
                    prev_start = row_start - 1
                    while prev_start > 0 and runs[prev_start - 1].row == r - 1:
                        prev_start -= 1
                    j = prev_start
                    for other in range(row_start, i):
                        while j < prev_stop and runs[j].last < runs[other].first - 1:
                            j += 1
                        c = j
                        while c < prev_stop and runs[c].first <= runs[other].last + 1:
                            root = _find(parent, other)
                            if _find(parent, c) != root:
                                parent[_find(parent, c)] = root
                            c += 1
            for i in range(n_runs):
                root = _find(parent, i)
                if label_of[root] < 0:
                    label_of[root] = n_labels
                    n_labels += 1
                label_of[i] = label_of[root]
        n_pixels = np.zeros(n_labels, dtype=np.int32)
        sums = np.zeros(n_labels, dtype=np.float64)
        sum_x = np.zeros(n_labels, dtype=np.float64)
        sum_y = np.zeros(n_labels, dtype=np.float64)
        peak = np.full(n_labels, -np.inf, dtype=np.float64)
        n_pixels_view = n_pixels
        sums_view = sums
        sum_x_view = sum_x
        sum_y_view = sum_y
        peak_view = peak
        _accumulate(
            image, runs, label_of, n_runs, n_pixels_view, sums_view, sum_x_view, sum_y_view,
            peak_view,
        )
        return n_pixels, sums, sum_x, sum_y, peak
    finally:
        free(runs)
        free(parent)
        free(label_of)


cdef void _accumulate(
    const mx_pixel_t[:, ::1] image, Run* runs, Py_ssize_t* label_of, Py_ssize_t n_runs,
    int[::1] n_pixels, double[::1] sums, double[::1] sum_x, double[::1] sum_y,
    double[::1] peak,
) noexcept nogil:
    cdef Py_ssize_t i, c, label
    cdef double value
    for i in range(n_runs):
        label = label_of[i]
        for c in range(runs[i].first, runs[i].last + 1):
            value = <double>image[runs[i].row, c]
            n_pixels[label] += 1
            sums[label] += value
            sum_x[label] += value * (c + 0.5)
            sum_y[label] += value * (runs[i].row + 0.5)
            if value > peak[label]:
                peak[label] = value


cdef extern from "_bslz4.h" nogil:
    ctypedef struct bslz4_cursor:
        pass
    int bslz4_cursor_open(
        bslz4_cursor* cursor, const unsigned char* src, size_t src_size, unsigned char* dst,
        size_t dst_size, size_t elem_size)
    int bslz4_cursor_advance(bslz4_cursor* cursor, size_t elements, int64_t* bad_block)
    void bslz4_cursor_close(bslz4_cursor* cursor)


def decode_threshold_kernel(
    const unsigned char[::1] chunk,
    mx_pixel_t[:, ::1] image,
    const unsigned char[:, ::1] valid,
    unsigned char[:, ::1] out,
    double gain,
    double sigma_background,
    double sigma_strong,
    int kernel_size,
    int min_local,
    double global_threshold,
    double max_valid,
    Py_ssize_t stripe_rows,
):
    """Decode a bitshuffle-LZ4 `chunk` into `image` and threshold it, one stripe of rows
    at a time: each stripe is thresholded as soon as the rows its windows reach are
    decoded, while they are still in cache, instead of after the whole frame went to
    memory and back. The same rows as `dispersion_threshold_kernel` (one thread; bands
    give identical results, every sum being exact). Integer frames only.

    Returns (status, bad_block, overloads): status 0, else a negative BSLZ4_ERR_* code.
    """
    cdef Py_ssize_t ny = image.shape[0], nx = image.shape[1]
    cdef Py_ssize_t columns = nx + 2 * kernel_size + 1
    cdef Py_ssize_t start = 0, stop, reach
    cdef long long[::1] int_sums = np.zeros(2 * columns, dtype=np.int64)
    cdef uint32_t[::1] work = np.zeros(columns, dtype=np.uint32)
    cdef long long overloads = 0
    cdef int64_t bad_block = -1
    cdef int status
    cdef bslz4_cursor cursor
    cdef spot_params params
    if mx_pixel_t is float:
        raise TypeError("decode_threshold_kernel takes integer frames")
    else:
        params.gain = gain
        params.sigma_background = sigma_background
        params.sigma_strong = sigma_strong
        params.global_threshold = global_threshold
        params.kernel_size = kernel_size
        params.min_local = min_local
        params.max_valid = <uint32_t>(max_valid if max_valid < 4294967295.0 else 4294967295.0)
        with nogil:
            status = bslz4_cursor_open(
                &cursor, &chunk[0], chunk.shape[0], <unsigned char*>&image[0, 0],
                ny * nx * sizeof(mx_pixel_t), sizeof(mx_pixel_t))
            while status == 0 and start < ny:
                stop = start + stripe_rows if start + stripe_rows < ny else ny
                reach = stop + kernel_size if stop + kernel_size < ny else ny
                status = bslz4_cursor_advance(&cursor, reach * nx, &bad_block)
                if status == 0:
                    overloads += _integer_band(
                        image, valid, out, start, stop, &params, &work[0], &int_sums[0],
                        columns, max_valid,
                    )
                start = stop
            bslz4_cursor_close(&cursor)
        return status, bad_block, overloads
