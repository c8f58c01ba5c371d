/* One row of flat/dark normalisation with minus-log, written so the compiler vectorises
   it (no calls, no branches: selects), with a float32 log of its own.

   fast_logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log x = e ln 2 + log m, log m by
   the minimax polynomial of Cephes' logf (S. Moshier). Max relative error 7.6e-8 for
   normal positive x (Cephes' figure; tests/kernels/test_tomo_preprocess.py checks it
   against numpy's log over 1e-6..1e6). The caller clamps x to >= min_transmission > 0,
   so zero, negative, NaN and subnormal inputs never reach it; +inf gives ~88.7.

   normalise_row: out[i] = -log(max((counts[i] - dark[i]) * inverse_open[i], min_t)),
   and 0 where inverse_open[i] is 0 (a pixel whose flat is not above its dark). NaN
   counts fail the comparison and take min_t, as in the scalar kernel. Compiled for AVX2
   and for the baseline, chosen at load time by the CPU (GCC's target_clones). */
#ifndef PREFECT_BEAMLINE_NORMALISE_ROW_H
#define PREFECT_BEAMLINE_NORMALISE_ROW_H

#include <stdint.h>
#include <string.h>

/* Comparisons below are on the bit patterns (as integers: positive floats order as
   their bits), not on floats: under GCC's default -ftrapping-math a float comparison
   is a branch the vectoriser will not turn into a blend. */
static inline float fast_logf(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    float exponent = (float)((int32_t)(bits >> 23) - 126);
    bits = (bits & 0x007fffffu) | 0x3f000000u; /* mantissa in [0.5, 1) */
    float m;
    memcpy(&m, &bits, sizeof m);
    /* m < sqrt(1/2) (0x3f3504f3): take 2m - 1 and one less in the exponent, with a 0/1
       factor ((m - 1) + m = 2m - 1 exactly). */
    float below = (float)(int32_t)((bits - 0x3f3504f3u) >> 31); /* 1 if below, else 0 */
    exponent -= below;
    m = (m - 1.0f) + below * m;
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y += exponent * -2.12194440e-4f;
    y += -0.5f * z;
    return m + y + exponent * 0.693359375f;
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void normalise_row(const float* restrict counts, const float* restrict dark,
                          const float* restrict inverse_open, float* restrict out,
                          Py_ssize_t n, float min_transmission) {
#pragma GCC ivdep
    for (Py_ssize_t i = 0; i < n; i++) {
        float transmission = (counts[i] - dark[i]) * inverse_open[i];
        transmission = transmission > min_transmission ? transmission : min_transmission;
        float value = -fast_logf(transmission);
        /* 0 where inverse_open is 0 (it is never negative): a mask on the bits. */
        uint32_t value_bits, open_bits;
        memcpy(&value_bits, &value, sizeof value_bits);
        memcpy(&open_bits, &inverse_open[i], sizeof open_bits);
        value_bits &= (uint32_t)((int32_t)(0u - open_bits) >> 31); /* all ones if > 0 */
        memcpy(&out[i], &value_bits, sizeof value_bits);
    }
}

#endif
