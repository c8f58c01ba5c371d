# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""peakfinder8-style hit finding on photon-counting frames (Cheetah/CrystFEL/OM method).

Per frame, with the GIL released:

1. One streaming pass: a per-ring histogram of the valid pixels' counts (exact up to
   HIST_BINS - 1, larger counts kept in a list), and the largest count of every block
   of BLOCK pixels of a row. The histogram is count-major (hist[count][ring], masked
   pixels counted in a spare ring column): along a row the ring changes every pixel or
   two while a blank frame's counts stay small, so the increments stay in a few cache
   lines, and a small count needs no branch on the mask.
2. Per ring, `n_iterations` rounds of sigma clipping on the histogram (exact integer sums,
   so the numpy reference gets the same doubles): threshold = max(mean + min_snr·sigma,
   adc_threshold); each round keeps the pixels below the previous round's threshold.
   Only the histogram's rows up to the frame's largest small count are read.
3. A second pass over the blocks whose largest count can pass the lowest threshold of
   the rings they cross (almost none on a blank frame) collects candidate pixels.
4. 8-connected components of the candidates (union-find in scan order), kept when their
   size is within [min_pix, max_pix] and their brightest pixel is a local maximum of
   its (2·local_max_radius + 1)² window; intensity and centroid are background-
   subtracted (count − ring mean).
"""

from cython.parallel cimport parallel, prange
from libc.math cimport ceil, floor, sqrt
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memset

from _shared cimport photon_count_t


cdef enum:
    HIST_BINS = 128  # counts below this are histogrammed per ring; larger ones listed
    BLOCK = 256  # pixels of a row whose largest count pass 1 records
    NO_RING = 0xFFFF  # ring-map value of a masked pixel


cdef struct Params:
    double min_snr
    double adc_threshold
    int n_iterations
    int64_t min_pix
    int64_t max_pix
    int local_max_radius
    int64_t ring_lo
    int64_t ring_hi
    int64_t overflow


cdef struct Workspace:
    uint32_t* hist
    uint16_t* over_ring
    int64_t* over_value
    Py_ssize_t n_over, cap_over
    int64_t* count
    int64_t* total
    uint64_t* sq_lo
    uint64_t* sq_hi
    double* mean
    double* threshold
    int64_t* bound
    int64_t* sparse
    int levels
    int64_t* block_max
    int64_t* cand
    int64_t* parent
    int64_t* npix
    int64_t* vmax
    int64_t* imax
    double* w
    double* wx
    double* wy
    Py_ssize_t n_cand, cap_cand


cdef int _grow(Workspace* ws, bint candidates) noexcept nogil:
    """Double the overflow list or the candidate arrays; -1 when out of memory."""
    cdef Py_ssize_t cap
    cdef void* p
    if not candidates:
        cap = ws.cap_over * 2 if ws.cap_over else 4096
        p = realloc(ws.over_ring, cap * sizeof(uint16_t))
        if p == NULL:
            return -1
        ws.over_ring = <uint16_t*> p
        p = realloc(ws.over_value, cap * sizeof(int64_t))
        if p == NULL:
            return -1
        ws.over_value = <int64_t*> p
        ws.cap_over = cap
        return 0
    cap = ws.cap_cand * 2 if ws.cap_cand else 4096
    p = realloc(ws.cand, cap * sizeof(int64_t))
    if p == NULL:
        return -1
    ws.cand = <int64_t*> p
    ws.cap_cand = cap
    return 0


cdef int _alloc(Workspace* ws, Py_ssize_t n_rings, Py_ssize_t n_blocks) noexcept nogil:
    memset(ws, 0, sizeof(Workspace))
    ws.levels = 1
    while (1 << ws.levels) <= n_rings:
        ws.levels += 1
    ws.hist = <uint32_t*> malloc((n_rings + 1) * HIST_BINS * sizeof(uint32_t))
    ws.bound = <int64_t*> malloc(n_rings * sizeof(int64_t))
    ws.count = <int64_t*> malloc(n_rings * sizeof(int64_t))
    ws.total = <int64_t*> malloc(n_rings * sizeof(int64_t))
    ws.sq_lo = <uint64_t*> malloc(n_rings * sizeof(uint64_t))
    ws.sq_hi = <uint64_t*> malloc(n_rings * sizeof(uint64_t))
    ws.mean = <double*> malloc(n_rings * sizeof(double))
    ws.threshold = <double*> malloc(n_rings * sizeof(double))
    ws.sparse = <int64_t*> malloc(n_rings * ws.levels * sizeof(int64_t))
    ws.block_max = <int64_t*> malloc(n_blocks * sizeof(int64_t))
    if (ws.hist == NULL or ws.count == NULL or ws.total == NULL or ws.sq_lo == NULL
            or ws.sq_hi == NULL or ws.mean == NULL or ws.threshold == NULL
            or ws.sparse == NULL or ws.block_max == NULL or ws.bound == NULL):
        return -1
    return 0


cdef void _release(Workspace* ws) noexcept nogil:
    free(ws.hist); free(ws.bound); free(ws.over_ring); free(ws.over_value); free(ws.count); free(ws.total)
    free(ws.sq_lo); free(ws.sq_hi); free(ws.mean); free(ws.threshold); free(ws.sparse)
    free(ws.block_max); free(ws.cand); free(ws.parent); free(ws.npix); free(ws.vmax)
    free(ws.imax); free(ws.w); free(ws.wx); free(ws.wy)


cdef inline void _add_square(Workspace* ws, Py_ssize_t ring, uint64_t x) noexcept nogil:
    """Sum of squares as a 128-bit integer (hi, lo): exact whatever the counts."""
    ws.sq_lo[ring] += x
    if ws.sq_lo[ring] < x:
        ws.sq_hi[ring] += 1


cdef void _ring_statistics(
    Workspace* ws, Py_ssize_t n_rings, Py_ssize_t top, const Params* p
) noexcept nogil:
    """Sigma-clipped mean and threshold of every ring, from the histogram (rows below
    `top` hold every small count) and the list."""
    cdef Py_ssize_t ring, b, k
    cdef Py_ssize_t stride = n_rings + 1
    cdef int it
    cdef uint32_t n
    cdef int64_t v
    cdef double mean, var, sq, t
    cdef const uint32_t* counts
    for it in range(p.n_iterations):
        memset(ws.count, 0, n_rings * sizeof(int64_t))
        memset(ws.total, 0, n_rings * sizeof(int64_t))
        memset(ws.sq_lo, 0, n_rings * sizeof(uint64_t))
        memset(ws.sq_hi, 0, n_rings * sizeof(uint64_t))
        for ring in range(n_rings):  # counts b < bound are below the ring's threshold
            t = ws.threshold[ring]
            if it == 0 or t >= HIST_BINS:
                ws.bound[ring] = HIST_BINS
            else:
                ws.bound[ring] = <int64_t> ceil(t)
        for b in range(top):
            counts = ws.hist + b * stride
            for ring in range(n_rings):
                n = counts[ring]
                if n and b < ws.bound[ring]:
                    ws.count[ring] += n
                    ws.total[ring] += <int64_t> n * b
                    _add_square(ws, ring, <uint64_t> n * <uint64_t> (b * b))
        for k in range(ws.n_over):
            ring = ws.over_ring[k]
            v = ws.over_value[k]
            if it == 0 or <double> v < ws.threshold[ring]:
                ws.count[ring] += 1
                ws.total[ring] += v
                _add_square(ws, ring, <uint64_t> v * <uint64_t> v)
        for ring in range(n_rings):
            if ws.count[ring] == 0:
                mean = 0.0
                var = 0.0
            else:
                mean = <double> ws.total[ring] / <double> ws.count[ring]
                sq = <double> ws.sq_hi[ring] * 18446744073709551616.0 + <double> ws.sq_lo[ring]
                var = sq / <double> ws.count[ring] - mean * mean
            t = mean + p.min_snr * (sqrt(var) if var > 0.0 else 0.0)
            ws.mean[ring] = mean
            ws.threshold[ring] = t if t > p.adc_threshold else p.adc_threshold


cdef void _integer_thresholds(Workspace* ws, Py_ssize_t n_rings, const Params* p) noexcept nogil:
    """Smallest count that passes each ring (count > threshold), INT64_MAX outside the
    resolution range, and the sparse table of their range minima (level k: 2^k rings)."""
    cdef Py_ssize_t ring, i, half
    cdef int k
    cdef double t
    cdef int64_t* st = ws.sparse
    cdef int64_t a, b
    for ring in range(n_rings):
        t = floor(ws.threshold[ring]) + 1.0
        if ring < p.ring_lo or ring >= p.ring_hi or t > 4.0e18:
            st[ring] = INT64_MAX
        else:
            st[ring] = <int64_t> t
    for k in range(1, ws.levels):
        half = 1 << (k - 1)
        for i in range(n_rings):
            a = st[(k - 1) * n_rings + i]
            if i + half < n_rings:
                b = st[(k - 1) * n_rings + i + half]
                if b < a:
                    a = b
            st[k * n_rings + i] = a


cdef inline int64_t _range_min(const Workspace* ws, Py_ssize_t n_rings, int64_t lo, int64_t hi) noexcept nogil:
    cdef int k = 0
    cdef int64_t a, b
    while (2 << k) <= hi - lo + 1:
        k += 1
    a = ws.sparse[k * n_rings + lo]
    b = ws.sparse[k * n_rings + hi - (1 << k) + 1]
    return a if a < b else b


cdef inline int64_t _find(int64_t* parent, int64_t i) noexcept nogil:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


cdef inline void _union(int64_t* parent, int64_t a, int64_t b) noexcept nogil:
    """Join two components; the root is the one whose first pixel comes first."""
    a = _find(parent, a)
    b = _find(parent, b)
    if a < b:
        parent[b] = a
    elif b < a:
        parent[a] = b


cdef Py_ssize_t _find_peaks(
    const photon_count_t* frame, const uint16_t* rings, Py_ssize_t ny, Py_ssize_t nx,
    Py_ssize_t n_rings, const int64_t* block_lo, const int64_t* block_hi, const Params* p,
    Workspace* ws, double* out_x, double* out_y, double* out_i, int32_t* out_n,
    Py_ssize_t max_peaks,
) noexcept nogil:
    """Peaks of one frame into the out_* rows (at most max_peaks); the number found, or
    -1 when out of memory."""
    cdef Py_ssize_t nbx = (nx + BLOCK - 1) // BLOCK
    cdef Py_ssize_t r, c, c0, c1, bx, k, q, prev, ring, rr, cc, found = 0
    cdef int64_t v, bmax, idx, root, target, lim
    cdef int64_t* ithr = ws.sparse
    cdef const photon_count_t* row
    cdef const uint16_t* ring_row
    cdef double weight
    cdef bint peak
    cdef int R = p.local_max_radius

    # Pass 1: histogram per ring, list of large counts, block maxima. Locals, not the
    # workspace's fields, in the loop: stores through `hist` cannot alias them. Column
    # n_rings of the count-major histogram collects masked pixels' small counts (unread).
    cdef uint32_t* hist = ws.hist
    cdef int64_t overflow = p.overflow
    cdef Py_ssize_t stride = n_rings + 1
    cdef int64_t top = -1
    memset(hist, 0, stride * HIST_BINS * sizeof(uint32_t))
    ws.n_over = 0
    for r in range(ny):
        row = frame + r * nx
        ring_row = rings + r * nx
        for bx in range(nbx):
            c0 = bx * BLOCK
            c1 = c0 + BLOCK if c0 + BLOCK < nx else nx
            bmax = -1
            for c in range(c0, c1):
                ring = ring_row[c]
                v = <int64_t> row[c]
                if <uint64_t> v < HIST_BINS:  # a small count (a negative one is not)
                    if ring == NO_RING:
                        ring = n_rings
                    elif v > bmax:
                        bmax = v
                    hist[v * stride + ring] += 1
                    continue
                if ring == NO_RING or v < 0 or v >= overflow:
                    continue
                if v > bmax:
                    bmax = v
                if ws.n_over == ws.cap_over and _grow(ws, False) < 0:
                    return -1
                ws.over_ring[ws.n_over] = <uint16_t> ring
                ws.over_value[ws.n_over] = v
                ws.n_over += 1
            ws.block_max[r * nbx + bx] = bmax
            if bmax > top:
                top = bmax

    _ring_statistics(ws, n_rings, top + 1 if top < HIST_BINS else HIST_BINS, p)
    _integer_thresholds(ws, n_rings, p)

    # Pass 2: candidates, only in blocks whose largest count can pass.
    ws.n_cand = 0
    for r in range(ny):
        row = frame + r * nx
        ring_row = rings + r * nx
        for bx in range(nbx):
            k = r * nbx + bx
            if block_lo[k] > block_hi[k] or ws.block_max[k] < _range_min(ws, n_rings, block_lo[k], block_hi[k]):
                continue
            c0 = bx * BLOCK
            c1 = c0 + BLOCK if c0 + BLOCK < nx else nx
            for c in range(c0, c1):
                ring = ring_row[c]
                v = <int64_t> row[c]
                if ring == NO_RING or v < 0 or v >= p.overflow or v < ithr[ring]:
                    continue
                if ws.n_cand == ws.cap_cand and _grow(ws, True) < 0:
                    return -1
                ws.cand[ws.n_cand] = r * nx + c
                ws.n_cand += 1
    if ws.n_cand == 0:
        return 0

    # Components: union-find over the candidates in scan order.
    free(ws.parent); free(ws.npix); free(ws.vmax); free(ws.imax)
    free(ws.w); free(ws.wx); free(ws.wy)
    ws.parent = <int64_t*> malloc(ws.n_cand * sizeof(int64_t))
    ws.npix = <int64_t*> calloc(ws.n_cand, sizeof(int64_t))
    ws.vmax = <int64_t*> malloc(ws.n_cand * sizeof(int64_t))
    ws.imax = <int64_t*> malloc(ws.n_cand * sizeof(int64_t))
    ws.w = <double*> calloc(ws.n_cand, sizeof(double))
    ws.wx = <double*> calloc(ws.n_cand, sizeof(double))
    ws.wy = <double*> calloc(ws.n_cand, sizeof(double))
    if (ws.parent == NULL or ws.npix == NULL or ws.vmax == NULL or ws.imax == NULL
            or ws.w == NULL or ws.wx == NULL or ws.wy == NULL):
        return -1
    prev = 0
    for k in range(ws.n_cand):
        ws.parent[k] = k
        idx = ws.cand[k]
        r = idx // nx
        c = idx - r * nx
        if k > 0 and c > 0 and ws.cand[k - 1] == idx - 1:
            _union(ws.parent, k, k - 1)
        if r > 0:
            target = (r - 1) * nx + (c - 1 if c > 0 else 0)
            lim = (r - 1) * nx + (c + 1 if c + 1 < nx else nx - 1)
            while prev < k and ws.cand[prev] < target:
                prev += 1
            q = prev
            while q < k and ws.cand[q] <= lim:
                _union(ws.parent, k, q)
                q += 1
    for k in range(ws.n_cand):
        root = _find(ws.parent, k)
        idx = ws.cand[k]
        r = idx // nx
        c = idx - r * nx
        v = <int64_t> frame[idx]
        weight = <double> v - ws.mean[rings[idx]]
        if ws.npix[root] == 0 or v > ws.vmax[root]:
            ws.vmax[root] = v
            ws.imax[root] = idx
        ws.npix[root] += 1
        ws.w[root] += weight
        ws.wx[root] += weight * <double> c
        ws.wy[root] += weight * <double> r

    # Filters: size, local maximum; store in order of each peak's first pixel.
    for k in range(ws.n_cand):
        if ws.parent[k] != k or ws.npix[k] < p.min_pix or ws.npix[k] > p.max_pix:
            continue
        idx = ws.imax[k]
        r = idx // nx
        c = idx - r * nx
        peak = True
        for rr in range(r - R if r - R > 0 else 0, r + R + 1 if r + R + 1 < ny else ny):
            for cc in range(c - R if c - R > 0 else 0, c + R + 1 if c + R + 1 < nx else nx):
                v = <int64_t> frame[rr * nx + cc]
                if rings[rr * nx + cc] != NO_RING and 0 <= v < p.overflow and v > ws.vmax[k]:
                    peak = False
        if not peak:
            continue
        if found < max_peaks:
            out_x[found] = ws.wx[k] / ws.w[k]
            out_y[found] = ws.wy[k] / ws.w[k]
            out_i[found] = ws.w[k]
            out_n[found] = <int32_t> ws.npix[k]
        found += 1
    return found


def find_peaks_kernel(
    const photon_count_t[:, :, ::1] frames,
    const uint16_t[:, ::1] rings,
    Py_ssize_t n_rings,
    const int64_t[::1] block_lo,
    const int64_t[::1] block_hi,
    double min_snr,
    double adc_threshold,
    int n_iterations,
    int64_t min_pix,
    int64_t max_pix,
    int local_max_radius,
    int64_t ring_lo,
    int64_t ring_hi,
    int64_t overflow,
    double[:, ::1] peak_x,
    double[:, ::1] peak_y,
    double[:, ::1] peak_intensity,
    int32_t[:, ::1] peak_npix,
    int64_t[::1] n_peaks,
    int n_threads,
):
    """Peaks of every frame of a chunk; frames run in parallel, one workspace a thread.

    Trusts its arguments (the face `prefect_beamline.ext.peakfinder` checks them).
    """
    cdef Py_ssize_t n = frames.shape[0], ny = frames.shape[1], nx = frames.shape[2]
    cdef Py_ssize_t max_peaks = peak_x.shape[1]
    cdef Py_ssize_t n_blocks = ny * ((nx + BLOCK - 1) // BLOCK)
    cdef Py_ssize_t i
    cdef Params p
    cdef Workspace* ws
    cdef bint ready
    p.min_snr = min_snr
    p.adc_threshold = adc_threshold
    p.n_iterations = n_iterations
    p.min_pix = min_pix
    p.max_pix = max_pix
    p.local_max_radius = local_max_radius
    p.ring_lo = ring_lo
    p.ring_hi = ring_hi
    p.overflow = overflow
    if n == 0:
        return
    with nogil, parallel(num_threads=n_threads if n_threads < n else n):
        ws = <Workspace*> malloc(sizeof(Workspace))
        ready = ws != NULL and _alloc(ws, n_rings, n_blocks) == 0
        for i in prange(n, schedule="dynamic"):
            if not ready:
                n_peaks[i] = -1
                continue
            n_peaks[i] = _find_peaks(
                &frames[i, 0, 0], &rings[0, 0], ny, nx, n_rings, &block_lo[0], &block_hi[0],
                &p, ws, &peak_x[i, 0], &peak_y[i, 0], &peak_intensity[i, 0], &peak_npix[i, 0],
                max_peaks,
            )
        if ws != NULL:
            _release(ws)
            free(ws)
