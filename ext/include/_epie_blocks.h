/* One (r)ePIE position with its 2-D FFTs taken apart into row and column FFTs, so each
 * per-pixel step runs on a block the FFT has just left in L1/L2 (included by _epie.pyx).
 *
 * A 2-D FFT is the row FFTs then the column FFTs; the modulus constraint is per pixel
 * of the far field, and the inverse is the column FFTs then the row FFTs. So a position
 * is three passes over the wave, each over blocks that fit in cache:
 *   1. row blocks: exit wave P_m * O into the rows, then their row FFTs;
 *   2. column blocks: column FFTs, the modulus constraint (intensity summed over the
 *      probe modes), inverse column FFTs;
 *   3. row blocks: inverse row FFTs, then the object and probe update from those rows.
 * With a whole-array 2-D plan the wave crosses memory six times (exit, two FFT passes
 * each way, modulus) plus the update; here three times. The FFTs are FFTW plans of
 * batched 1-D transforms (planned in prefect_beamline/techniques/ptycho/fft.py), run
 * through fftwf_execute_dft, whose address the planner hands over: the C library's
 * new-array execute is thread-safe, so blocks may run on several threads.
 *
 * Sub-pixel positions (`subpixel`, fractions fy, fx of a pixel in [0, 1)): the object
 * under the probe is the bilinear interpolation of the (ny+1, nx+1) pixels from the
 * patch corner, and the object step goes back through its adjoint (each step spread
 * over the four pixels with the same weights). The spread writes object rows that two
 * row blocks share, so pass 3 leaves the object step in the wave's first mode and a
 * fourth pass, over object rows, adds it.
 *
 * Layouts: complex64 as interleaved floats; the probe (modes, ny, nx), the wave
 * (modes, ny, stride) with its first nx columns used,
 * the object rows `obj_stride` floats apart. The FFTs are unnormalised; the modulus
 * pass folds in the orthonormal scale as epie_modulus_row does.
 */
#ifndef EPIE_BLOCKS_H
#define EPIE_BLOCKS_H

#include "_epie_rows.h"

typedef void (*epie_fft_execute)(void *plan, void *in, void *out);

/* The plans of one pattern shape: `rows` rows or `cols` columns per block (the last
 * block may be narrower: its own plans, NULL when the size divides evenly). */
typedef struct {
    epie_fft_execute execute;
    void *row_forward, *row_backward, *row_forward_last, *row_backward_last;
    void *col_forward, *col_backward, *col_forward_last, *col_backward_last;
    ptrdiff_t ny, nx, rows, cols, modes;
    ptrdiff_t stride; /* complex64 per wave row (>= nx: a padded row spares the column
                         FFTs the cache conflicts of a power-of-two stride) */
    int subpixel;
    float fy, fx;
} epie_blocks;

/* out = the bilinear interpolation at (fy, fx) between object rows o0 and o1 (n + 1
 * pixels of each read): out_j = w00 o0_j + w01 o0_{j+1} + w10 o1_j + w11 o1_{j+1}. */
EPIE_CLONES static void epie_interp_row(const float *restrict o0, const float *restrict o1,
                                        ptrdiff_t n, float fy, float fx, float *restrict out) {
    const float w00 = (1.0f - fy) * (1.0f - fx), w01 = (1.0f - fy) * fx;
    const float w10 = fy * (1.0f - fx), w11 = fy * fx;
    for (ptrdiff_t k = 0; k < 2 * n; k++)
        out[k] = w00 * o0[k] + w01 * o0[k + 2] + w10 * o1[k] + w11 * o1[k + 2];
}

/* The adjoint of one interpolated row's x part, weighted wy: o_j += wy (1-fx) g_j,
 * o_{j+1} += wy fx g_j (n + 1 object pixels written). */
EPIE_CLONES static void epie_spread_row(float *restrict o, const float *restrict g, ptrdiff_t n,
                                        float wy, float fx) {
    const float near = wy * (1.0f - fx), far = wy * fx;
    for (ptrdiff_t k = 0; k < 2 * n; k++) o[k] += near * g[k];
    for (ptrdiff_t k = 0; k < 2 * n; k++) o[k + 2] += far * g[k];
}

/* power[j] += |P_j|^2 over one row. */
EPIE_CLONES static void epie_add_power(const float *restrict probe, float *restrict power,
                                       ptrdiff_t n) {
    for (ptrdiff_t j = 0; j < n; j++)
        power[j] += probe[2 * j] * probe[2 * j] + probe[2 * j + 1] * probe[2 * j + 1];
}

static float epie_row_max(const float *values, ptrdiff_t n) {
    float best = 0.0f;
    for (ptrdiff_t j = 0; j < n; j++) best = values[j] > best ? values[j] : best;
    return best;
}

/* Pass 1 on row block `block`: the exit waves of every mode, then their row FFTs.
 * *probe_max: the block's largest sum over modes of |P_m|^2; *obj_max its largest |O|^2.
 * `power`: 3*nx floats of scratch (the interpolated object row after nx of them).
 * The same rows of the position's measured `amplitude` are prefetched: pass 2 reads
 * them a column block at a time, an access pattern the hardware prefetcher does not
 * follow from memory, where every position's amplitudes come from. */
static void epie_forward_rows(const epie_blocks *b, ptrdiff_t block, const float *probe,
                              float *wave, const float *obj, ptrdiff_t obj_stride,
                              const float *amplitude, float *power, float *probe_max,
                              float *obj_max) {
    ptrdiff_t nx = b->nx, row = 2 * nx, mode = 2 * b->ny * nx;
    ptrdiff_t wrow = 2 * b->stride, wmode = 2 * b->ny * b->stride;
    ptrdiff_t first = block * b->rows;
    ptrdiff_t last = first + b->rows < b->ny ? first + b->rows : b->ny;
    float pm = 0.0f, om = 0.0f, p, o;
    for (ptrdiff_t i = first; i < last; i++) {
        for (ptrdiff_t k = 0; k < nx; k += 16) __builtin_prefetch(amplitude + i * nx + k, 0, 2);
        const float *under = obj + i * obj_stride;
        if (b->subpixel) {
            epie_interp_row(under, under + obj_stride, nx, b->fy, b->fx, power + nx);
            under = power + nx;
        }
        if (b->modes == 1) {
            epie_exit_row(probe + i * row, under, wave + i * wrow, nx, &p, &o);
        } else {
            for (ptrdiff_t j = 0; j < nx; j++) power[j] = 0.0f;
            for (ptrdiff_t m = 0; m < b->modes; m++) {
                const float *pr = probe + m * mode + i * row;
                epie_exit_row(pr, under, wave + m * wmode + i * wrow, nx, &p, &o);
                epie_add_power(pr, power, nx);
            }
            p = epie_row_max(power, nx);
        }
        pm = p > pm ? p : pm;
        om = o > om ? o : om;
    }
    void *plan = last - first == b->rows ? b->row_forward : b->row_forward_last;
    for (ptrdiff_t m = 0; m < b->modes; m++)
        b->execute(plan, wave + m * wmode + first * wrow, wave + m * wmode + first * wrow);
    *probe_max = pm;
    *obj_max = om;
}

/* The modulus constraint on `width` pixels of one row, all modes at once: with F_m the
 * unnormalised far field of mode m and r = sqrt(sum_m |F_m|^2), valid pixels become
 * s*A*F_m/r (where s*r <= 1e-30, no phase to keep: mode 0 becomes s*A, the others 0),
 * masked pixels s^2*F_m. Returns sum_valid (s*r - A)^2. With one mode this is
 * epie_modulus_row's arithmetic, operation for operation. `scratch`: 4*width floats.
 * Each loop runs over the whole width, so gcc vectorises it; a column block should be
 * wide enough (32 columns and more) that the loops are not mostly start-up. */
EPIE_CLONES static double epie_modulus_modes_row(float *wave, ptrdiff_t mode_stride,
                                                 ptrdiff_t modes,
                                                 const float *restrict amplitude,
                                                 const uint8_t *restrict valid,
                                                 ptrdiff_t width, float s,
                                                 float *restrict scratch) {
    const float s2 = s * s;
    float *restrict power = scratch, *restrict factor = scratch + width;
    float *restrict real_part = scratch + 2 * width, *restrict terms = scratch + 3 * width;
    const float *restrict w0 = wave;
    for (ptrdiff_t j = 0; j < width; j++)
        power[j] = w0[2 * j] * w0[2 * j] + w0[2 * j + 1] * w0[2 * j + 1];
    for (ptrdiff_t m = 1; m < modes; m++) {
        const float *restrict w = wave + m * mode_stride;
        for (ptrdiff_t j = 0; j < width; j++)
            power[j] += w[2 * j] * w[2 * j] + w[2 * j + 1] * w[2 * j + 1];
    }
    for (ptrdiff_t j = 0; j < width; j++) {
        float r = sqrtf(power[j]);
        float modulus = s * r, target = amplitude[j];
        float ok = (float)(valid[j] != 0);
        float phase = (float)(modulus > 1e-30f);
        float d = modulus - target;
        float scaled = s * target / (r + (1.0f - phase));
        factor[j] = ok * phase * scaled + (1.0f - ok) * s2;
        real_part[j] = ok * (1.0f - phase) * (s * target);
        terms[j] = ok * (d * d);
    }
    for (ptrdiff_t m = 0; m < modes; m++) {
        float *restrict w = wave + m * mode_stride;
        float keep = m == 0 ? 1.0f : 0.0f;
        for (ptrdiff_t j = 0; j < width; j++) {
            w[2 * j] = w[2 * j] * factor[j] + keep * real_part[j];
            w[2 * j + 1] = w[2 * j + 1] * factor[j];
        }
    }
    double lanes[EPIE_LANES] = {0};
    ptrdiff_t j = 0;
    for (; j + EPIE_LANES <= width; j += EPIE_LANES)
        for (int l = 0; l < EPIE_LANES; l++) lanes[l] += terms[j + l];
    for (; j < width; j++) lanes[0] += terms[j];
    double error = 0.0;
    for (int l = 0; l < EPIE_LANES; l++) error += lanes[l];
    return error;
}

/* Pass 2 on column block `block`: column FFTs of every mode, the modulus constraint,
 * inverse column FFTs. `amplitude` and `valid` are the position's (ny, nx) maps;
 * returns the block's error. `scratch`: 4*cols floats. */
static double epie_columns(const epie_blocks *b, ptrdiff_t block, float *wave,
                           const float *amplitude, const uint8_t *valid, float s,
                           float *scratch) {
    ptrdiff_t nx = b->nx, mode = 2 * b->ny * b->stride, wrow = 2 * b->stride;
    ptrdiff_t first = block * b->cols;
    ptrdiff_t width = first + b->cols < nx ? b->cols : nx - first;
    int full = width == b->cols;
    float *start = wave + 2 * first;
    for (ptrdiff_t m = 0; m < b->modes; m++)
        b->execute(full ? b->col_forward : b->col_forward_last, start + m * mode,
                   start + m * mode);
    double error = 0.0;
    for (ptrdiff_t i = 0; i < b->ny; i++)
        error += b->modes == 1
                     ? epie_modulus_row(start + i * wrow, amplitude + first + i * nx,
                                        valid + first + i * nx, width, s, scratch)
                     : epie_modulus_modes_row(start + i * wrow, mode, b->modes,
                                              amplitude + first + i * nx,
                                              valid + first + i * nx, width, s, scratch);
    for (ptrdiff_t m = 0; m < b->modes; m++)
        b->execute(full ? b->col_backward : b->col_backward_last, start + m * mode,
                   start + m * mode);
    return error;
}

/* The update of one row with several probe modes, Delta_m = revised_m - P_m*O:
 * O += wo * sum_m conj(P_m) Delta_m, P_m += wp * conj(O) Delta_m (O before its update);
 * ePIE wo, wp constant, rPIE wo = 1/(a_obj sum_m |P_m|^2 + b_obj),
 * wp = 1/(a_probe |O|^2 + b_probe). With `step` not NULL, O is left alone and
 * wo * sum_m conj(P_m) Delta_m written there instead. `scratch`: 3n floats. */
EPIE_CLONES static void epie_update_row_modes(float *obj, float *probe,
                                              ptrdiff_t probe_mode, const float *revised,
                                              ptrdiff_t wave_mode, ptrdiff_t modes,
                                              ptrdiff_t n, int regularised, int update_probe,
                                              float wo_epie, float wp_epie, float a_obj,
                                              float b_obj, float a_probe, float b_probe,
                                              float *step, float *restrict scratch) {
    float *restrict acc = scratch, *restrict power = scratch + 2 * n;
    for (ptrdiff_t j = 0; j < 3 * n; j++) scratch[j] = 0.0f;
    for (ptrdiff_t m = 0; m < modes; m++) {
        float *restrict p = probe + m * probe_mode;
        const float *restrict r = revised + m * wave_mode;
        const float *restrict o = obj;
        for (ptrdiff_t j = 0; j < n; j++) {
            float pr = p[2 * j], pi = p[2 * j + 1];
            float o_r = o[2 * j], o_i = o[2 * j + 1];
            float dr = r[2 * j] - (pr * o_r - pi * o_i);
            float di = r[2 * j + 1] - (pr * o_i + pi * o_r);
            acc[2 * j] += pr * dr + pi * di;
            acc[2 * j + 1] += pr * di - pi * dr;
            power[j] += pr * pr + pi * pi;
            float wp = regularised ? 1.0f / (a_probe * (o_r * o_r + o_i * o_i) + b_probe)
                                   : wp_epie;
            if (update_probe) {
                p[2 * j] = pr + wp * (o_r * dr + o_i * di);
                p[2 * j + 1] = pi + wp * (o_r * di - o_i * dr);
            }
        }
    }
    for (ptrdiff_t j = 0; j < n; j++) {
        float wo = regularised ? 1.0f / (a_obj * power[j] + b_obj) : wo_epie;
        acc[2 * j] *= wo;
        acc[2 * j + 1] *= wo;
    }
    if (step != NULL) {
        float *restrict out = step;
        for (ptrdiff_t j = 0; j < 2 * n; j++) out[j] = acc[j];
    } else {
        float *restrict out = obj;
        for (ptrdiff_t j = 0; j < 2 * n; j++) out[j] += acc[j];
    }
}

/* Pass 3 on row block `block`: inverse row FFTs of every mode (the revised exit waves,
 * orthonormal), then the update of those object and probe rows (sub-pixel: of the
 * probe rows, the object step left in the first mode's rows). `scratch`: 5*nx floats. */
static void epie_inverse_rows(const epie_blocks *b, ptrdiff_t block, float *probe,
                              float *wave, float *obj, ptrdiff_t obj_stride, int regularised,
                              int update_probe, float wo_epie, float wp_epie, float a_obj,
                              float b_obj, float a_probe, float b_probe, float *scratch) {
    ptrdiff_t nx = b->nx, row = 2 * nx, mode = 2 * b->ny * nx;
    ptrdiff_t wrow = 2 * b->stride, wmode = 2 * b->ny * b->stride;
    ptrdiff_t first = block * b->rows;
    ptrdiff_t last = first + b->rows < b->ny ? first + b->rows : b->ny;
    void *plan = last - first == b->rows ? b->row_backward : b->row_backward_last;
    for (ptrdiff_t m = 0; m < b->modes; m++)
        b->execute(plan, wave + m * wmode + first * wrow, wave + m * wmode + first * wrow);
    for (ptrdiff_t i = first; i < last; i++) {
        float *o = obj + i * obj_stride;
        if (b->subpixel) {
            epie_interp_row(o, o + obj_stride, nx, b->fy, b->fx, scratch + 3 * nx);
            epie_update_row_modes(scratch + 3 * nx, probe + i * row, mode, wave + i * wrow,
                                  wmode, b->modes, nx, regularised, update_probe, wo_epie,
                                  wp_epie, a_obj, b_obj, a_probe, b_probe, wave + i * wrow,
                                  scratch);
        } else if (b->modes == 1) {
            epie_update_row(o, probe + i * row, wave + i * wrow, nx, regularised, update_probe,
                            wo_epie, wp_epie, a_obj, b_obj, a_probe, b_probe);
        } else {
            epie_update_row_modes(o, probe + i * row, mode, wave + i * wrow, wmode, b->modes, nx,
                                  regularised, update_probe, wo_epie, wp_epie, a_obj, b_obj,
                                  a_probe, b_probe, NULL, scratch);
        }
    }
}

/* Pass 4 (sub-pixel only) on object-row block `block` of the ny + 1 rows a patch
 * touches: the object step (pass 3 left it in the first mode's rows) spread by the
 * adjoint of the interpolation. */
static void epie_spread_rows(const epie_blocks *b, ptrdiff_t block, float *obj,
                             ptrdiff_t obj_stride, const float *step) {
    ptrdiff_t nx = b->nx, row = 2 * b->stride;
    ptrdiff_t first = block * b->rows;
    ptrdiff_t last = first + b->rows < b->ny + 1 ? first + b->rows : b->ny + 1;
    for (ptrdiff_t t = first; t < last; t++) {
        if (t < b->ny) epie_spread_row(obj + t * obj_stride, step + t * row, nx, 1.0f - b->fy, b->fx);
        if (t >= 1) epie_spread_row(obj + t * obj_stride, step + (t - 1) * row, nx, b->fy, b->fx);
    }
}

/* The FFTs of one position alone, as the fused pass runs them (the benchmark's floor of
 * the block plans): every mode's row FFTs, column FFTs, inverse column FFTs, inverse
 * row FFTs, block by block. */
static void epie_block_rows_fft(const epie_blocks *b, float *wave, int backward) {
    ptrdiff_t wrow = 2 * b->stride, wmode = 2 * b->ny * b->stride;
    for (ptrdiff_t first = 0; first < b->ny; first += b->rows) {
        int full = first + b->rows <= b->ny;
        void *plan = backward ? (full ? b->row_backward : b->row_backward_last)
                              : (full ? b->row_forward : b->row_forward_last);
        for (ptrdiff_t m = 0; m < b->modes; m++)
            b->execute(plan, wave + m * wmode + first * wrow, wave + m * wmode + first * wrow);
    }
}

static void epie_block_cols_fft(const epie_blocks *b, float *wave, int backward) {
    ptrdiff_t wmode = 2 * b->ny * b->stride;
    for (ptrdiff_t first = 0; first < b->nx; first += b->cols) {
        int full = first + b->cols <= b->nx;
        void *plan = backward ? (full ? b->col_backward : b->col_backward_last)
                              : (full ? b->col_forward : b->col_forward_last);
        for (ptrdiff_t m = 0; m < b->modes; m++)
            b->execute(plan, wave + m * wmode + 2 * first, wave + m * wmode + 2 * first);
    }
}

static void epie_block_fft_pair(const epie_blocks *b, float *wave) {
    epie_block_rows_fft(b, wave, 0);
    epie_block_cols_fft(b, wave, 0);
    epie_block_cols_fft(b, wave, 1);
    epie_block_rows_fft(b, wave, 1);
}

#endif
