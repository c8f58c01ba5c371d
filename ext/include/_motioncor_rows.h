/* The inner loops of motion correction over a group of frames (included by _motioncor.pyx).
 *
 * Why C: gcc vectorises these loops only with `restrict` pointers, which Cython does not
 * emit. `target_clones` adds x86-64-v4 (AVX-512) and AVX2 copies, one picked when the
 * module loads (still runs on any x86-64; builds elsewhere without the clones). One copy
 * of each function per stored pixel type, made by the macros below; the build forbids
 * contracting a*b+c into FMA (-ffp-contract=off), so every copy rounds alike.
 *
 * Each function does the work of one block (a binned output row, a 32 x 32 tile) for one
 * frame: the caller loops over the frames of a group inside the block, so the gain
 * reference and the output block stay in cache while the frames stream past once.
 */
#ifndef MOTIONCOR_ROWS_H
#define MOTIONCOR_ROWS_H

#include <stddef.h>
#include <stdint.h>

#if defined(EM_CLONES)
/* set by the includer (a test build of one instruction set) */
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define EM_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define EM_CLONES
#endif
#define EM_INLINE static inline __attribute__((always_inline))

/* out[j] = sum of the factor x factor block of raw * gain starting at column j * factor,
 * times `scale`; `raw` and `gain` point at the block row's first row (rows `stride`
 * apart); `columns` holds nx_out * factor floats of scratch. */
#define EM_BIN_ROW(NAME, TYPE)                                                                \
    EM_CLONES static void NAME(const TYPE *restrict raw, const float *restrict gain,         \
                               int use_gain, ptrdiff_t stride, int factor, ptrdiff_t nx_out, \
                               float scale, float *restrict columns, float *restrict out) {  \
        ptrdiff_t width = nx_out * factor;                                                    \
        for (ptrdiff_t x = 0; x < width; x++) columns[x] = 0.0f;                             \
        for (int a = 0; a < factor; a++) {                                                    \
            const TYPE *restrict r = raw + a * stride;                                        \
            const float *restrict g = gain + a * stride;                                      \
            if (use_gain)                                                                     \
                for (ptrdiff_t x = 0; x < width; x++) columns[x] += (float)r[x] * g[x];       \
            else                                                                              \
                for (ptrdiff_t x = 0; x < width; x++) columns[x] += (float)r[x];              \
        }                                                                                     \
        for (ptrdiff_t j = 0; j < nx_out; j++) {                                              \
            float total = 0.0f;                                                               \
            for (int b = 0; b < factor; b++) total = total + columns[j * factor + b];         \
            out[j] = total * scale;                                                           \
        }                                                                                     \
    }

/* One tile of one frame into the sum: out[y][x] += the bilinear sample between input rows
 * y, y+1 and columns x, x+1 (weights w00 w01 / w10 w11), gain-corrected. `raw` and
 * `gain` point at the tile's first input sample (its shifted top-left corner); rows + 1
 * input rows of width + 1 samples are read, each converted and gain-corrected once, into
 * the two halves of `row_pair` (2 * (width + 1) floats), used in turn. */
#define EM_SHIFT_TILE(NAME, TYPE)                                                               \
    EM_CLONES static void NAME(const TYPE *restrict raw, const float *restrict gain,           \
                               int use_gain, ptrdiff_t stride, ptrdiff_t rows, ptrdiff_t width, \
                               float w00, float w01, float w10, float w11,                     \
                               float *restrict out, ptrdiff_t out_stride,                      \
                               float *restrict row_pair) {                                     \
        ptrdiff_t n = width + 1;                                                                \
        for (ptrdiff_t y = 0; y <= rows; y++) {                                                 \
            const TYPE *restrict r = raw + y * stride;                                          \
            const float *restrict g = gain + y * stride;                                        \
            float *restrict lower = row_pair + (y & 1) * n;                                     \
            if (use_gain)                                                                       \
                for (ptrdiff_t k = 0; k < n; k++) lower[k] = (float)r[k] * g[k];               \
            else                                                                                \
                for (ptrdiff_t k = 0; k < n; k++) lower[k] = (float)r[k];                      \
            if (y == 0) continue;                                                               \
            const float *upper = row_pair + ((y - 1) & 1) * n;                                  \
            float *restrict o = out + (y - 1) * out_stride;                                     \
            for (ptrdiff_t x = 0; x < width; x++)                                               \
                o[x] += (w00 * upper[x] + w01 * upper[x + 1] + w10 * lower[x] +                 \
                         w11 * lower[x + 1]);                                                   \
        }                                                                                       \
    }

EM_BIN_ROW(em_bin_row_u8, uint8_t)
EM_BIN_ROW(em_bin_row_i8, int8_t)
EM_BIN_ROW(em_bin_row_i16, int16_t)
EM_BIN_ROW(em_bin_row_u16, uint16_t)
EM_BIN_ROW(em_bin_row_f32, float)
EM_SHIFT_TILE(em_shift_tile_u8, uint8_t)
EM_SHIFT_TILE(em_shift_tile_i8, int8_t)
EM_SHIFT_TILE(em_shift_tile_i16, int16_t)
EM_SHIFT_TILE(em_shift_tile_u16, uint16_t)
EM_SHIFT_TILE(em_shift_tile_f32, float)

#endif
