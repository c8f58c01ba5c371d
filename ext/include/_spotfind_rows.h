/* Fast rows of the dispersion threshold for integer frames (included by _spotfind.pyx).
 *
 * Why C: gcc vectorises these loops only with `restrict` pointers and arithmetic
 * (branch-free) selects, which Cython does not emit. `target_clones` adds x86-64-v4
 * (AVX-512) and AVX2 copies of each band function, one picked when the module loads, so
 * it still runs on any x86-64 (and builds elsewhere without the clones).
 *
 * Per band of rows, one uint32 per column holds the valid count of the 2k+1 rows around
 * the current row in its high bits and their summed counts in its low bits, updated by
 * the entering and leaving rows; the window sums along the row are added from those on
 * the fly, both halves at once. A float32 screen, looser than the exact test by a
 * relative 1e-5 (far above float32 rounding), drops almost every pixel; the few left get
 * the exact DIALS test in doubles on window sums that are exact, each quantity computed
 * with the numpy reference's operations in its order, so the mask is identical to it.
 *
 * Pixels above max_valid (the detector's overflow value, counts beyond saturation) are
 * masked frame by frame: the unmasked rows stop at a row holding one, as at a bright
 * row, and the caller takes the rows whose window holds it with the masked rows (which
 * compare every value with max_valid and count the overloads). A frame without
 * overloads pays nothing for the masking.
 *
 * Packing is exact while every valid value v satisfies v * (2k+1)^2 < 2^shift (for
 * k = 3: v <= 684,784 counts). Each entering row's largest valid value is found in the
 * same loop; a row above the limit stops the band, and the caller does the rows whose
 * window holds it with its 64-bit path.
 */
#ifndef SPOTFIND_ROWS_H
#define SPOTFIND_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(SPOT_CLONES)
/* set by the includer (a test build of one instruction set) */
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SPOT_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define SPOT_CLONES
#endif
#define SPOT_INLINE static inline __attribute__((always_inline))

typedef uint32_t spot_u32x8 __attribute__((vector_size(32)));
typedef int32_t spot_i32x4 __attribute__((vector_size(16)));
typedef uint16_t spot_u16x8 __attribute__((vector_size(16)));
typedef uint8_t spot_u8x8 __attribute__((vector_size(8)));
typedef double spot_f64x4 __attribute__((vector_size(32)));

typedef struct {
    double gain, sigma_background, sigma_strong, global_threshold;
    int32_t kernel_size, min_local;
    /* Valid pixels above it (overflow 2^n - 1, beyond saturation) are masked for this
       frame (see above). */
    uint32_t max_valid;
} spot_params;

/* Where the count starts in a packed column sum: above the bits of the largest sum. */
static inline int spot_count_shift(int kernel_size) {
    int64_t area = (2 * (int64_t)kernel_size + 1) * (2 * (int64_t)kernel_size + 1);
    int bits = 0;
    while (bits < 40 && ((int64_t)1 << bits) <= area) bits++;
    return 31 - bits;
}

/* The largest valid value the packed sums hold exactly (0: kernel too large to pack). */
static inline uint32_t spot_value_limit(int kernel_size) {
    int64_t area = (2 * (int64_t)kernel_size + 1) * (2 * (int64_t)kernel_size + 1);
    int shift = spot_count_shift(kernel_size);
    return shift < 8 ? 0 : (uint32_t)((((int64_t)1 << shift) - 1) / area);
}

/* The loose screen keeps b > 0 with b^2 > factor * x * m (factor 0 keeps every b > 0;
   NaN keeps none, as the exact test then fails everywhere). */
static inline float spot_screen_factor(const spot_params *p) {
    if (isnan(p->sigma_strong) || isnan(p->gain)) return NAN;
    if (p->sigma_strong <= 0.0) return 0.0f;
    return (float)(p->sigma_strong * p->sigma_strong * p->gain * (1.0 - 1e-5));
}

/* DIALS's test on exact window sums (m valid pixels, sum x, sum of squares y), each
   quantity computed in the order of operations of the reference. The dispersion half
   goes first: most pixels the screen lets through fail it at a <= 0, before any sqrt. */
static inline int spot_dials_test(double p, double m, double x, double y,
                                  const spot_params *prm) {
    double gain = prm->gain, a, b;
    a = m * y - x * x - gain * x * (m - 1.0);
    if (!(a > 0.0 && a > gain * x * prm->sigma_background * sqrt(2.0 * (m - 1.0))))
        return 0;
    b = m * p - x;
    return b > 0.0 && b > prm->sigma_strong * sqrt(gain * x * m)
           && p > prm->global_threshold;
}

/* Each pixel type twice: unmasked rows (spot_u16_band) and masked rows (spot_u16m_band). */
#define SPOT_PIXEL uint16_t
#define SPOT_LOAD8(pointer, into)                                                         \
    do {                                                                                  \
        spot_u16x8 half_;                                                                 \
        memcpy(&half_, (pointer), sizeof half_);                                          \
        (into) = __builtin_convertvector(half_, spot_u32x8);                              \
    } while (0)
#define SPOT_MASKED 0
#define SPOT_NAME(suffix) spot_u16_##suffix
#include "_spotfind_rows_impl.h"
#undef SPOT_NAME
#undef SPOT_MASKED
#define SPOT_MASKED 1
#define SPOT_NAME(suffix) spot_u16m_##suffix
#include "_spotfind_rows_impl.h"
#undef SPOT_NAME
#undef SPOT_MASKED
#undef SPOT_PIXEL
#undef SPOT_LOAD8

#define SPOT_PIXEL uint32_t
#define SPOT_LOAD8(pointer, into) memcpy(&(into), (pointer), sizeof(into))
#define SPOT_MASKED 0
#define SPOT_NAME(suffix) spot_u32_##suffix
#include "_spotfind_rows_impl.h"
#undef SPOT_NAME
#undef SPOT_MASKED
#define SPOT_MASKED 1
#define SPOT_NAME(suffix) spot_u32m_##suffix
#include "_spotfind_rows_impl.h"
#undef SPOT_NAME
#undef SPOT_MASKED
#undef SPOT_PIXEL
#undef SPOT_LOAD8

#endif
