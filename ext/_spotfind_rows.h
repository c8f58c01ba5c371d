/* Fast rows of the dispersion threshold for integer frames (included by _spotfind.pyx).
 *
 * Why C: gcc vectorises these loops only with `restrict` pointers and arithmetic
 * (branch-free) selects, which Cython does not emit. `target_clones` adds an AVX2 copy
 * picked at load time, so the module still runs on any x86-64 (and elsewhere).
 *
 * Per band of rows: column sums of the valid count and of the counts over the 2k+1 rows
 * around the current row, in int32, updated by the entering and leaving rows; the window
 * sums along the row are summed from those on the fly. A float32 screen, looser than the
 * exact test by a relative 1e-5 (far above float32 rounding), drops almost every pixel;
 * the few left get the exact DIALS test in doubles, in the same order of operations as
 * the numpy reference, so the mask is identical to it.
 *
 * int32 is exact while every valid value v satisfies v * (2k+1)^2 < 2^31. Each entering
 * row is checked (its maximum, in the same loop); a row above the limit stops the band and
 * the caller does the rows whose window holds it with the 64-bit path.
 */
#ifndef SPOTFIND_ROWS_H
#define SPOTFIND_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SPOT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SPOT_CLONES
#endif
#define SPOT_INLINE static inline __attribute__((always_inline))

typedef struct {
    double gain, sigma_background, sigma_strong, global_threshold;
    int32_t kernel_size, min_local;
} spot_params;

/* The largest valid value the int32 sums hold exactly for this kernel size. */
static inline uint32_t spot_int32_limit(int kernel_size) {
    int64_t width = 2 * (int64_t)kernel_size + 1;
    return (uint32_t)(INT32_MAX / (width * width));
}

/* The loose screen: keep a pixel when b^2 > factor * x * m (0 keeps every b > 0). */
static inline float spot_screen_factor(const spot_params *p) {
    if (!(p->sigma_strong > 0.0)) return p->sigma_strong <= 0.0 ? 0.0f : NAN;
    return (float)(p->sigma_strong * p->sigma_strong * p->gain * (1.0 - 1e-5));
}

/* Generates the band function for one pixel type. */
#define SPOT_DEFINE_BAND(NAME, PIXEL)                                                     \
                                                                                          \
/* Add one row to the column sums (remove = NULL) or move them down (add one, remove     \
   another); returns the largest valid value added. */                                    \
SPOT_INLINE uint32_t NAME##_columns(                                                      \
    const PIXEL *restrict add, const uint8_t *restrict add_valid,                         \
    const PIXEL *restrict remove, const uint8_t *restrict remove_valid,                   \
    int32_t *restrict count, int32_t *restrict total, ptrdiff_t nx) {                     \
    uint32_t largest = 0;                                                                 \
    if (remove != NULL) {                                                                 \
        for (ptrdiff_t c = 0; c < nx; c++) {                                              \
            uint32_t in = (uint32_t)add[c] & -(uint32_t)add_valid[c];                     \
            uint32_t out = (uint32_t)remove[c] & -(uint32_t)remove_valid[c];              \
            largest = in > largest ? in : largest;                                        \
            count[c] += (int32_t)add_valid[c] - (int32_t)remove_valid[c];                 \
            total[c] = (int32_t)((uint32_t)total[c] + in - out);                          \
        }                                                                                 \
    } else {                                                                              \
        for (ptrdiff_t c = 0; c < nx; c++) {                                              \
            uint32_t in = (uint32_t)add[c] & -(uint32_t)add_valid[c];                     \
            largest = in > largest ? in : largest;                                        \
            count[c] += (int32_t)add_valid[c];                                            \
            total[c] = (int32_t)((uint32_t)total[c] + in);                                \
        }                                                                                 \
    }                                                                                     \
    return largest;                                                                       \
}                                                                                         \
                                                                                          \
SPOT_INLINE void NAME##_remove(                                                           \
    const PIXEL *restrict remove, const uint8_t *restrict remove_valid,                   \
    int32_t *restrict count, int32_t *restrict total, ptrdiff_t nx) {                     \
    for (ptrdiff_t c = 0; c < nx; c++) {                                                  \
        count[c] -= (int32_t)remove_valid[c];                                             \
        total[c] -= (int32_t)((uint32_t)remove[c] & -(uint32_t)remove_valid[c]);          \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* Screen one row: `width` is a constant after inlining, so the window loop unrolls and \
   the column loop vectorises. count/total are padded: column c at index c + k. */       \
SPOT_INLINE void NAME##_screen(                                                           \
    const PIXEL *restrict row, const uint8_t *restrict row_valid,                         \
    const int32_t *restrict count, const int32_t *restrict total,                         \
    uint8_t *restrict out, ptrdiff_t nx, const int width, int32_t min_local,             \
    float factor) {                                                                       \
    for (ptrdiff_t c = 0; c < nx; c++) {                                                  \
        int32_t m = 0, x = 0;                                                             \
        for (int j = 0; j < width; j++) {                                                 \
            m += count[c + j];                                                            \
            x += total[c + j];                                                            \
        }                                                                                 \
        int32_t p = (int32_t)((uint32_t)row[c] & -(uint32_t)row_valid[c]);                \
        int32_t b = m * p - x;                                                            \
        float bf = (float)b;                                                              \
        out[c] = (uint8_t)((b > 0) & (m >= min_local)                                     \
                           & (bf * bf > factor * (float)x * (float)m));                   \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* The exact DIALS test of one pixel, as the reference evaluates it. */                  \
static int NAME##_exact(                                                                  \
    const PIXEL *image, const uint8_t *valid, ptrdiff_t ny, ptrdiff_t nx, ptrdiff_t r,   \
    ptrdiff_t c, const spot_params *prm) {                                                \
    int k = prm->kernel_size;                                                             \
    double p = (double)image[r * nx + c], m = 0.0, x = 0.0, y = 0.0, v, a, b;             \
    ptrdiff_t i0 = r - k > 0 ? r - k : 0, i1 = r + k + 1 < ny ? r + k + 1 : ny;          \
    ptrdiff_t j0 = c - k > 0 ? c - k : 0, j1 = c + k + 1 < nx ? c + k + 1 : nx;          \
    for (ptrdiff_t i = i0; i < i1; i++) {                                                 \
        for (ptrdiff_t j = j0; j < j1; j++) {                                             \
            if (valid[i * nx + j]) {                                                      \
                v = (double)image[i * nx + j];                                            \
                m += 1.0;                                                                 \
                x += v;                                                                   \
                y += v * v;                                                               \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    double gain = prm->gain;                                                              \
    b = m * p - x;                                                                        \
    if (!(b > 0.0 && b > prm->sigma_strong * sqrt(gain * x * m)                           \
          && p > prm->global_threshold))                                                  \
        return 0;                                                                         \
    a = m * y - x * x - gain * x * (m - 1.0);                                             \
    return a > 0.0 && a > gain * x * prm->sigma_background * sqrt(2.0 * (m - 1.0));       \
}                                                                                         \
                                                                                          \
SPOT_INLINE void NAME##_screen_any(                                                       \
    const PIXEL *restrict row, const uint8_t *restrict row_valid,                         \
    const int32_t *restrict count, const int32_t *restrict total,                         \
    uint8_t *restrict out, ptrdiff_t nx, int k, int32_t min_local, float factor) {       \
    switch (k) {                                                                          \
    case 1: NAME##_screen(row, row_valid, count, total, out, nx, 3, min_local, factor);   \
        break;                                                                            \
    case 2: NAME##_screen(row, row_valid, count, total, out, nx, 5, min_local, factor);   \
        break;                                                                            \
    case 3: NAME##_screen(row, row_valid, count, total, out, nx, 7, min_local, factor);   \
        break;                                                                            \
    case 4: NAME##_screen(row, row_valid, count, total, out, nx, 9, min_local, factor);   \
        break;                                                                            \
    case 5: NAME##_screen(row, row_valid, count, total, out, nx, 11, min_local, factor);  \
        break;                                                                            \
    default:                                                                              \
        NAME##_screen(row, row_valid, count, total, out, nx, 2 * k + 1, min_local,        \
                      factor);                                                            \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* Threshold rows [row_start, row_stop) into `out`. `work` holds 2 * (nx + 2k) int32.    \
   Returns the first row not done (row_stop when all are); when a row holds a valid      \
   value above the int32 limit, *bright_row is set to it and the rows from the returned  \
   one up to bright_row + k are left to the caller. */                                    \
SPOT_CLONES static ptrdiff_t NAME##_band(                                                 \
    const PIXEL *image, const uint8_t *valid, uint8_t *out, ptrdiff_t ny, ptrdiff_t nx,  \
    ptrdiff_t row_start, ptrdiff_t row_stop, const spot_params *prm, int32_t *work,      \
    ptrdiff_t *bright_row) {                                                              \
    int k = prm->kernel_size;                                                             \
    ptrdiff_t padded = nx + 2 * (ptrdiff_t)k;                                             \
    int32_t *count = work, *total = work + padded;                                        \
    uint32_t limit = spot_int32_limit(k);                                                 \
    float factor = spot_screen_factor(prm);                                               \
    memset(work, 0, 2 * padded * sizeof(int32_t));                                        \
    ptrdiff_t lo = row_start - k > 0 ? row_start - k : 0;                                 \
    ptrdiff_t hi = row_start + k + 1 < ny ? row_start + k + 1 : ny;                       \
    for (ptrdiff_t r = lo; r < hi; r++) {                                                 \
        if (NAME##_columns(image + r * nx, valid + r * nx, NULL, NULL, count + k,         \
                           total + k, nx) > limit) {                                      \
            *bright_row = r;                                                              \
            return row_start;                                                             \
        }                                                                                 \
    }                                                                                     \
    for (ptrdiff_t r = row_start; r < row_stop; r++) {                                    \
        if (r > row_start) {                                                              \
            ptrdiff_t enter = r + k, leave = r - k - 1;                                   \
            uint32_t largest = 0;                                                         \
            if (enter < ny && leave >= 0)                                                 \
                largest = NAME##_columns(image + enter * nx, valid + enter * nx,          \
                                         image + leave * nx, valid + leave * nx,          \
                                         count + k, total + k, nx);                       \
            else if (enter < ny)                                                          \
                largest = NAME##_columns(image + enter * nx, valid + enter * nx, NULL,    \
                                         NULL, count + k, total + k, nx);                 \
            else if (leave >= 0)                                                          \
                NAME##_remove(image + leave * nx, valid + leave * nx, count + k,          \
                              total + k, nx);                                             \
            if (largest > limit) {                                                        \
                *bright_row = enter;                                                      \
                return r;                                                                 \
            }                                                                             \
        }                                                                                 \
        uint8_t *row_out = out + r * nx;                                                  \
        NAME##_screen_any(image + r * nx, valid + r * nx, count, total, row_out, nx, k,   \
                          prm->min_local, factor);                                        \
        /* Survivors are rare: skip eight screened-out pixels at a time. */              \
        ptrdiff_t c = 0;                                                                  \
        for (; c + 8 <= nx; c += 8) {                                                     \
            uint64_t word;                                                                \
            memcpy(&word, row_out + c, 8);                                                \
            if (word == 0) continue;                                                      \
            for (ptrdiff_t j = c; j < c + 8; j++)                                         \
                if (row_out[j]) row_out[j] = (uint8_t)NAME##_exact(image, valid, ny, nx,  \
                                                                   r, j, prm);            \
        }                                                                                 \
        for (; c < nx; c++)                                                               \
            if (row_out[c]) row_out[c] = (uint8_t)NAME##_exact(image, valid, ny, nx, r,   \
                                                               c, prm);                   \
    }                                                                                     \
    return row_stop;                                                                      \
}

SPOT_DEFINE_BAND(spot_u16, uint16_t)
SPOT_DEFINE_BAND(spot_u32, uint32_t)

#endif
