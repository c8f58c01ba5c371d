/* One row of each per-pixel pass of (r)ePIE (included by _epie.pyx).
 *
 * Why C: gcc vectorises these loops over interleaved complex64 (re, im float pairs) only
 * with `restrict` pointers and branch-free selects, which Cython does not emit.
 * `target_clones` adds x86-64-v4 (AVX-512) and AVX2 copies of each function, one picked
 * when the module loads, so it still runs on any x86-64 (and builds elsewhere without
 * the clones). The build forbids contracting a*b+c into FMA (-ffp-contract=off), so
 * every copy rounds as the numpy reference does; it compiles this module with
 * -fno-math-errno -fno-trapping-math (setup.py), without which the modulus pass's sqrtf
 * and selects keep it scalar.
 *
 * The FFTs between these passes are unnormalised (FFTW's and `scipy.fft`'s
 * norm="backward" forward, norm="forward" inverse); the orthonormal scale s = 1/sqrt(N)
 * of the reference is folded into the modulus pass, so no pass of its own scales.
 */
#ifndef EPIE_ROWS_H
#define EPIE_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(EPIE_CLONES)
/* set by the includer (a test build of one instruction set) */
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define EPIE_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define EPIE_CLONES
#endif

#define EPIE_LANES 16
#define EPIE_INLINE static inline __attribute__((always_inline))

/* out = probe * obj over one row of n complex pixels; the row's largest |P|^2 and
 * |O|^2 into *probe_max, *obj_max (the update's ePIE/rPIE weights). The maxima are kept
 * per lane (a maximum does not depend on the order it is taken in), so the loop
 * vectorises. */
EPIE_CLONES static void epie_exit_row(const float *restrict probe, const float *restrict obj,
                                      float *restrict out, ptrdiff_t n, float *probe_max,
                                      float *obj_max) {
    float pm[EPIE_LANES] = {0}, om[EPIE_LANES] = {0};
    ptrdiff_t j = 0;
    for (; j + EPIE_LANES <= n; j += EPIE_LANES) {
        for (int l = 0; l < EPIE_LANES; l++) {
            ptrdiff_t k = j + l;
            float pr = probe[2 * k], pi = probe[2 * k + 1];
            float o_r = obj[2 * k], o_i = obj[2 * k + 1];
            out[2 * k] = pr * o_r - pi * o_i;
            out[2 * k + 1] = pr * o_i + pi * o_r;
            float p2 = pr * pr + pi * pi, o2 = o_r * o_r + o_i * o_i;
            pm[l] = p2 > pm[l] ? p2 : pm[l];
            om[l] = o2 > om[l] ? o2 : om[l];
        }
    }
    for (; j < n; j++) {
        float pr = probe[2 * j], pi = probe[2 * j + 1];
        float o_r = obj[2 * j], o_i = obj[2 * j + 1];
        out[2 * j] = pr * o_r - pi * o_i;
        out[2 * j + 1] = pr * o_i + pi * o_r;
        float p2 = pr * pr + pi * pi, o2 = o_r * o_r + o_i * o_i;
        pm[0] = p2 > pm[0] ? p2 : pm[0];
        om[0] = o2 > om[0] ? o2 : om[0];
    }
    float p_best = 0.0f, o_best = 0.0f;
    for (int l = 0; l < EPIE_LANES; l++) {
        p_best = pm[l] > p_best ? pm[l] : p_best;
        o_best = om[l] > o_best ? om[l] : o_best;
    }
    *probe_max = p_best;
    *obj_max = o_best;
}

/* The modulus constraint on one row of the unnormalised far field F (in place), so that
 * the unnormalised inverse FFT of the row's result is the orthonormal revised exit wave:
 * valid pixels become s*A*F/|F| (s*A, real, where s|F| <= 1e-30: no phase to keep),
 * masked pixels s^2*F (the current estimate). Returns sum_valid (s|F| - A)^2.
 *
 * Two loops, each of which gcc vectorises: the pixels (the cases are weights of 0 or 1,
 * exact since 1*x + 0 = x, not branches; where there is no phase r < 1e-30/s, so r + 1
 * is exactly 1), writing each error term to `terms` (n floats of scratch); then the sum
 * of the terms, per lane in double (another order than one running sum: equal to
 * rounding). */
EPIE_CLONES static double epie_modulus_row(float *restrict wave, const float *restrict amplitude,
                                           const uint8_t *restrict valid, ptrdiff_t n, float s,
                                           float *restrict terms) {
    const float s2 = s * s;
    for (ptrdiff_t j = 0; j < n; j++) {
        float re = wave[2 * j], im = wave[2 * j + 1];
        float r = sqrtf(re * re + im * im);
        float modulus = s * r, target = amplitude[j];
        float ok = (float)(valid[j] != 0);
        float phase = (float)(modulus > 1e-30f);
        float d = modulus - target;
        float scaled = s * target / (r + (1.0f - phase));
        float factor = ok * phase * scaled + (1.0f - ok) * s2;
        float real_part = ok * (1.0f - phase) * (s * target);
        wave[2 * j] = re * factor + real_part;
        wave[2 * j + 1] = im * factor;
        terms[j] = ok * (d * d);
    }
    double lanes[EPIE_LANES] = {0};
    ptrdiff_t j = 0;
    for (; j + EPIE_LANES <= n; j += EPIE_LANES)
        for (int l = 0; l < EPIE_LANES; l++) lanes[l] += terms[j + l];
    for (; j < n; j++) lanes[0] += terms[j];
    double error = 0.0;
    for (int l = 0; l < EPIE_LANES; l++) error += lanes[l];
    return error;
}

/* One pixel of the update (see epie_update_row); the flags are constants of each caller. */
EPIE_INLINE void epie_update_pixel(float *restrict obj, float *restrict probe,
                                   const float *restrict revised, int regularised,
                                   int update_probe, float wo_epie, float wp_epie, float a_obj,
                                   float b_obj, float a_probe, float b_probe) {
    float pr = probe[0], pi = probe[1];
    float o_r = obj[0], o_i = obj[1];
    float dr = revised[0] - (pr * o_r - pi * o_i);
    float di = revised[1] - (pr * o_i + pi * o_r);
    float wo = regularised ? 1.0f / (a_obj * (pr * pr + pi * pi) + b_obj) : wo_epie;
    float wp = regularised ? 1.0f / (a_probe * (o_r * o_r + o_i * o_i) + b_probe) : wp_epie;
    obj[0] = o_r + wo * (pr * dr + pi * di);
    obj[1] = o_i + wo * (pr * di - pi * dr);
    if (update_probe) {
        probe[0] = pr + wp * (o_r * dr + o_i * di);
        probe[1] = pi + wp * (o_r * di - o_i * dr);
    }
}

#define EPIE_UPDATE_LOOP(REGULARISED, UPDATE_PROBE)                                          \
    for (ptrdiff_t j = 0; j < n; j++)                                                        \
        epie_update_pixel(obj + 2 * j, probe + 2 * j, revised + 2 * j, REGULARISED,          \
                          UPDATE_PROBE, wo_epie, wp_epie, a_obj, b_obj, a_probe, b_probe)

/* The object and probe update of one row from the revised exit wave; the exit wave
 * P*O is recomputed here (P and O have not changed since it was formed), so it never
 * needs a buffer of its own. ePIE: wo, wp are the constant weights; rPIE (regularised):
 * wo = 1/(a_obj |P|^2 + b_obj), wp = 1/(a_probe |O|^2 + b_probe) per pixel. One loop per
 * combination of the flags, so none branches inside. */
EPIE_CLONES static void epie_update_row(float *restrict obj, float *restrict probe,
                                        const float *restrict revised, ptrdiff_t n,
                                        int regularised, int update_probe, float wo_epie,
                                        float wp_epie, float a_obj, float b_obj, float a_probe,
                                        float b_probe) {
    if (regularised && update_probe)
        EPIE_UPDATE_LOOP(1, 1);
    else if (regularised)
        EPIE_UPDATE_LOOP(1, 0);
    else if (update_probe)
        EPIE_UPDATE_LOOP(0, 1);
    else
        EPIE_UPDATE_LOOP(0, 0);
}

#endif
