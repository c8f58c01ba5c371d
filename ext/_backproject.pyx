# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Parallel-beam back projection with linear interpolation (the "BP" of FBP).

Geometry as scikit-image's `iradon`: slice pixel (i, j) of an N x N slice sits at
x = j - N//2, y = N//2 - i; it sees detector position t = centre + x cos(theta) +
y sin(theta), linearly interpolated, zero outside [0, n_detector - 1].

Work is split into blocks of slice rows; a block walks the angles in order and, for
each angle, adds that angle's (filtered) projection to every row of the block, so one
projection (a few kB) stays in L1 cache while the block's rows are in L2. Blocks of all
slices run in parallel with the GIL released. The valid range of columns of each row is
solved for once per (row, angle), so the inner loop (C, below: AVX2 gathers where the
CPU has them, else fixed-point arithmetic) has no bounds tests.
"""

from cython.parallel cimport prange
from libc.math cimport ceil, floor, sqrt

from _shared cimport clamp_to_range

cdef extern from *:
    """
    /* One row of one angle: row[j] += linear interpolation of the projection at
       t = t0 + j c, for j in lo..hi (the caller has made every t lie in
       [0, n_detector - 1], up to rounding; the projection has a zero after its last
       pixel). The AVX2 version computes t in double precision 8 pixels at a time and
       gathers; the portable one walks t in 32.32 fixed point (one integer add per
       pixel; the step's rounding drifts < 1e-6 pixel over a row). The choice is made
       once, at import, from what the CPU supports. */
    #include <math.h>
    #include <stdint.h>
    static void bp_row_portable(const float* p, float* row, double t0, double c,
                                Py_ssize_t lo, Py_ssize_t hi) {
        int64_t position = llround((t0 + (double)lo * c) * 4294967296.0);
        int64_t step = llround(c * 4294967296.0);
        while (lo <= hi && position < 0) { position += step; lo++; }
        while (hi >= lo && position + (int64_t)(hi - lo) * step < 0) { hi--; }
        for (Py_ssize_t j = lo; j <= hi; j++) {
            Py_ssize_t k = (Py_ssize_t)(position >> 32);
            float fraction = (float)(uint32_t)position * (float)(1.0 / 4294967296.0);
            row[j] += p[k] + fraction * (p[k + 1] - p[k]);
            position += step;
        }
    }
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    #define BP_HAVE_AVX2_PATH 1
    __attribute__((target("avx2")))
    static void bp_row_avx2(const float* p, float* row, double t0, double c,
                            Py_ssize_t lo, Py_ssize_t hi) {
        const __m256d step = _mm256_set1_pd(c), origin = _mm256_set1_pd(t0);
        const __m256d lanes = _mm256_set_pd(3.0, 2.0, 1.0, 0.0), four = _mm256_set1_pd(4.0);
        Py_ssize_t j = lo;
        for (; j + 8 <= hi + 1; j += 8) {
            __m256d ja = _mm256_add_pd(_mm256_set1_pd((double)j), lanes);
            __m256d ta = _mm256_add_pd(origin, _mm256_mul_pd(ja, step));
            __m256d tb = _mm256_add_pd(origin, _mm256_mul_pd(_mm256_add_pd(ja, four), step));
            __m128i ka = _mm256_cvttpd_epi32(ta), kb = _mm256_cvttpd_epi32(tb);
            __m128 fa = _mm256_cvtpd_ps(_mm256_sub_pd(ta, _mm256_cvtepi32_pd(ka)));
            __m128 fb = _mm256_cvtpd_ps(_mm256_sub_pd(tb, _mm256_cvtepi32_pd(kb)));
            __m256i k = _mm256_set_m128i(kb, ka);
            __m256 fraction = _mm256_set_m128(fb, fa);
            __m256 left = _mm256_i32gather_ps(p, k, 4);
            __m256 right = _mm256_i32gather_ps(p + 1, k, 4);
            __m256 sum = _mm256_loadu_ps(row + j);
            sum = _mm256_add_ps(sum, _mm256_add_ps(left,
                  _mm256_mul_ps(fraction, _mm256_sub_ps(right, left))));
            _mm256_storeu_ps(row + j, sum);
        }
        for (; j <= hi; j++) {
            double t = t0 + (double)j * c;
            Py_ssize_t k = (Py_ssize_t)t;
            float fraction = (float)(t - (double)k);
            row[j] += p[k] + fraction * (p[k + 1] - p[k]);
        }
    }
    static int bp_cpu_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    }
    #else
    #define BP_HAVE_AVX2_PATH 0
    static void bp_row_avx2(const float* p, float* row, double t0, double c,
                            Py_ssize_t lo, Py_ssize_t hi) { bp_row_portable(p, row, t0, c, lo, hi); }
    static int bp_cpu_has_avx2(void) { return 0; }
    #endif
    """
    void bp_row_portable(const float* p, float* row, double t0, double c,
                         Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    void bp_row_avx2(const float* p, float* row, double t0, double c,
                     Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    int bp_cpu_has_avx2() noexcept nogil


# Decided once, at import: the AVX2 path where the CPU has it.
cdef bint USE_AVX2 = bp_cpu_has_avx2()
HAS_AVX2 = bool(USE_AVX2)


cdef void _backproject_block(
    const float[:, ::1] filtered,
    const double[::1] cos_angles,
    const double[::1] sin_angles,
    double centre,
    float[:, ::1] out,
    Py_ssize_t first_row,
    Py_ssize_t last_row,
    bint circle,
    bint avx2,
) noexcept nogil:
    """Rows first_row..last_row-1 of one slice from its filtered sinogram.

    `filtered` is (n_angles, n_detector + 1): the extra zero column lets the inner loop
    read the right neighbour of the last detector pixel without a test.
    """
    cdef Py_ssize_t n_angles = filtered.shape[0]
    cdef Py_ssize_t n_detector = filtered.shape[1] - 1
    cdef Py_ssize_t size = out.shape[1]
    cdef Py_ssize_t half = size // 2
    cdef Py_ssize_t a, i, j, j_low, j_high, reach
    cdef double c, s, t0, last = <double>(n_detector - 1), squared
    cdef const float* projection
    cdef float* row
    for i in range(first_row, last_row):
        for j in range(size):
            out[i, j] = 0.0
    for a in range(n_angles):
        c = cos_angles[a]
        s = sin_angles[a]
        projection = &filtered[a, 0]
        for i in range(first_row, last_row):
            row = &out[i, 0]
            # t(j) = t0 + j c for this row and angle.
            t0 = centre - half * c + (half - i) * s
            j_low, j_high = 0, size - 1
            if circle:
                squared = <double>(half * half - (half - i) * (half - i))
                if squared < 0:
                    continue
                reach = <Py_ssize_t>sqrt(squared)
                while (reach + 1) * (reach + 1) <= squared:
                    reach += 1
                while reach * reach > squared:
                    reach -= 1
                j_low = half - reach if half - reach > 0 else 0
                j_high = half + reach if half + reach < size - 1 else size - 1
            if c > 1e-12:
                j_low = max(j_low, clamp_to_range(ceil(-t0 / c), 0, size))
                j_high = min(j_high, clamp_to_range(floor((last - t0) / c), -1, size - 1))
            elif c < -1e-12:
                j_low = max(j_low, clamp_to_range(ceil((last - t0) / c), 0, size))
                j_high = min(j_high, clamp_to_range(floor(-t0 / c), -1, size - 1))
            elif t0 < 0 or t0 > last:
                continue
            if j_low > j_high:
                continue
            if avx2:
                bp_row_avx2(projection, row, t0, c, j_low, j_high)
            else:
                bp_row_portable(projection, row, t0, c, j_low, j_high)


def backproject_kernel(
    const float[:, :, ::1] filtered,
    const double[::1] cos_angles,
    const double[::1] sin_angles,
    double centre,
    float[:, :, ::1] out,
    bint circle,
    int rows_per_block,
    int n_threads,
    bint simd=True,
):
    """Back-project filtered sinograms (slice, angle, detector + 1) into out (slice, N, N).

    Sums without scaling; the caller multiplies by pi / (2 n_angles). `simd=False`
    forces the portable path (the AVX2 one is used where the CPU has it).
    """
    cdef bint avx2 = USE_AVX2 and simd
    cdef Py_ssize_t n_slices = out.shape[0]
    cdef Py_ssize_t size = out.shape[1]
    cdef Py_ssize_t n_blocks = (size + rows_per_block - 1) // rows_per_block
    cdef Py_ssize_t item, slice_index, block, first_row, last_row
    for item in prange(n_slices * n_blocks, nogil=True, num_threads=n_threads,
                       schedule="dynamic"):
        slice_index = item // n_blocks
        block = item % n_blocks
        first_row = block * rows_per_block
        last_row = first_row + rows_per_block
        if last_row > size:
            last_row = size
        _backproject_block(
            filtered[slice_index], cos_angles, sin_angles, centre, out[slice_index],
            first_row, last_row, circle, avx2,
        )
