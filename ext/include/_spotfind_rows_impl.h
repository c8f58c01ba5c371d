/* One pixel type's rows of the dispersion threshold: included by _spotfind_rows.h with
 * SPOT_NAME(suffix), SPOT_PIXEL, SPOT_LOAD8(pointer, into) (8 pixels as uint32) and
 * SPOT_MASKED defined. No include guard on purpose.
 *
 * SPOT_MASKED 1: a pixel is used when its mask flag is set and its value is at most
 * max_valid, and the screen counts the others (overloads). SPOT_MASKED 0 (the rows every
 * frame without overloads takes): the mask flag alone; a row holding a valid value above
 * max_valid stops the band like a bright row, so these rows never see an overload and
 * the compiler drops the comparisons and the count. */

#if SPOT_MASKED
#define SPOT_USED(value, flag, max_valid) ((uint32_t)(flag) & ((uint32_t)(value) <= (max_valid)))
#else
#define SPOT_USED(value, flag, max_valid) ((void)(value), (void)(max_valid), (uint32_t)(flag))
#endif

/* Add one row to the packed column sums, or move them down a row (add one, remove
   another, remove != NULL); returns the largest used value added. */
SPOT_INLINE uint32_t SPOT_NAME(columns)(
    const SPOT_PIXEL *restrict add, const uint8_t *restrict add_valid,
    const SPOT_PIXEL *restrict remove, const uint8_t *restrict remove_valid,
    uint32_t *restrict columns, ptrdiff_t nx, int shift, uint32_t max_valid) {
    uint32_t largest = 0;
    if (remove != NULL) {
        for (ptrdiff_t c = 0; c < nx; c++) {
            uint32_t add_used = SPOT_USED(add[c], add_valid[c], max_valid);
            uint32_t remove_used = SPOT_USED(remove[c], remove_valid[c], max_valid);
            uint32_t in = (uint32_t)add[c] & -add_used;
            uint32_t out = (uint32_t)remove[c] & -remove_used;
            largest = in > largest ? in : largest;
            columns[c] += (in + (add_used << shift)) - (out + (remove_used << shift));
        }
    } else {
        for (ptrdiff_t c = 0; c < nx; c++) {
            uint32_t add_used = SPOT_USED(add[c], add_valid[c], max_valid);
            uint32_t in = (uint32_t)add[c] & -add_used;
            largest = in > largest ? in : largest;
            columns[c] += in + (add_used << shift);
        }
    }
    return largest;
}

SPOT_INLINE void SPOT_NAME(remove)(
    const SPOT_PIXEL *restrict remove, const uint8_t *restrict remove_valid,
    uint32_t *restrict columns, ptrdiff_t nx, int shift, uint32_t max_valid) {
    for (ptrdiff_t c = 0; c < nx; c++) {
        uint32_t used = SPOT_USED(remove[c], remove_valid[c], max_valid);
        columns[c] -= ((uint32_t)remove[c] & -used) + (used << shift);
    }
}

/* Screen one row into `out` (1 = may be strong); returns how many of its valid pixels
   are above max_valid (overloads). `width` is a constant after inlining, so the window
   loop unrolls and the column loop vectorises. `columns` is zero-padded: column c at
   index c + k. */
SPOT_INLINE uint32_t SPOT_NAME(screen)(
    const SPOT_PIXEL *restrict row, const uint8_t *restrict row_valid,
    const uint32_t *restrict columns, uint8_t *restrict out, ptrdiff_t nx,
    const int width, int shift, int32_t min_local, float factor, uint32_t max_valid) {
    uint32_t low = ((uint32_t)1 << shift) - 1, overloads = 0;
    for (ptrdiff_t c = 0; c < nx; c++) {
        uint32_t used = SPOT_USED(row[c], row_valid[c], max_valid);
        overloads += (uint32_t)row_valid[c] - used;
        uint32_t window = 0;
        for (int j = 0; j < width; j++) window += columns[c + j];
        int32_t m = (int32_t)(window >> shift), x = (int32_t)(window & low);
        /* b = m p - x exactly for valid pixels (p <= limit); a masked pixel's b may wrap
           around, harmlessly, as its flag is cleared by the mask at the end. */
        int32_t b = (int32_t)((uint32_t)m * (uint32_t)row[c] - (uint32_t)x);
        float bf = (float)b;
        out[c] = (uint8_t)((b > 0) & (m >= min_local)
                           & (bf * bf > factor * (float)x * (float)m) & used);
    }
    return overloads;
}

SPOT_INLINE uint32_t SPOT_NAME(screen_any)(
    const SPOT_PIXEL *restrict row, const uint8_t *restrict row_valid,
    const uint32_t *restrict columns, uint8_t *restrict out, ptrdiff_t nx, int k,
    int shift, int32_t min_local, float factor, uint32_t max_valid) {
    switch (k) {
    case 1: return SPOT_NAME(screen)(row, row_valid, columns, out, nx, 3, shift, min_local,
                                     factor, max_valid);
    case 2: return SPOT_NAME(screen)(row, row_valid, columns, out, nx, 5, shift, min_local,
                                     factor, max_valid);
    case 3: return SPOT_NAME(screen)(row, row_valid, columns, out, nx, 7, shift, min_local,
                                     factor, max_valid);
    case 4: return SPOT_NAME(screen)(row, row_valid, columns, out, nx, 9, shift, min_local,
                                     factor, max_valid);
    case 5: return SPOT_NAME(screen)(row, row_valid, columns, out, nx, 11, shift, min_local,
                                     factor, max_valid);
    default:
        return SPOT_NAME(screen)(row, row_valid, columns, out, nx, 2 * k + 1, shift,
                                 min_local, factor, max_valid);
    }
}

/* The exact test of pixel (r, c) on its window's sums. Values are at most the packing
   limit, so every sum (squares included) is an integer below 2^53: exact in doubles, as
   in the reference. Windows up to 8 wide that fit in the row take 8 lanes at once. */
SPOT_INLINE int SPOT_NAME(exact)(
    const SPOT_PIXEL *image, const uint8_t *valid, ptrdiff_t ny, ptrdiff_t nx,
    ptrdiff_t r, ptrdiff_t c, const spot_params *prm, spot_u32x8 lanes) {
    int k = prm->kernel_size;
    ptrdiff_t i0 = r - k > 0 ? r - k : 0, i1 = r + k + 1 < ny ? r + k + 1 : ny;
    ptrdiff_t j0 = c - k, j1 = c + k + 1;
    double m, x, y;
    uint32_t max_valid = prm->max_valid;
    if (2 * k + 1 <= 8 && j0 >= 0 && j0 + 8 <= nx) {
        /* Valid flags are 0 or 1: eight at a time as one word; their sum by multiply. */
        uint64_t all_valid = 0x0101010101010101ull >> (8 * (8 - (2 * k + 1)));
        uint32_t n = 0, sum = 0;
        spot_u32x8 sum8 = {0};
        spot_f64x4 squares = {0};
        for (ptrdiff_t i = i0; i < i1; i++) {
            spot_u32x8 v;
            uint64_t ok;
            SPOT_LOAD8(image + i * nx + j0, v);
            memcpy(&ok, valid + i * nx + j0, sizeof ok);
            ok &= all_valid;
            v &= lanes;
#if SPOT_MASKED
            for (int j = 0; j < 8; j++)  /* overloads in the window count as masked (rare) */
                if (v[j] > max_valid) ok &= ~((uint64_t)0xFF << (8 * j));
#endif
            if (ok != all_valid) {  /* masked pixels in this row of the window (rare) */
                for (int j = 0; j < 8; j++)
                    if (!((ok >> (8 * j)) & 1)) v[j] = 0;
            }
            n += (uint32_t)((ok * 0x0101010101010101ull) >> 56);
            sum8 += v;
            spot_i32x4 low = (spot_i32x4)__builtin_shufflevector(v, v, 0, 1, 2, 3);
            spot_i32x4 high = (spot_i32x4)__builtin_shufflevector(v, v, 4, 5, 6, 7);
            spot_f64x4 low_d = __builtin_convertvector(low, spot_f64x4);
            spot_f64x4 high_d = __builtin_convertvector(high, spot_f64x4);
            squares += low_d * low_d + high_d * high_d;
        }
        for (int j = 0; j < 8; j++) sum += sum8[j];
        m = (double)n;
        x = (double)sum;
        y = (squares[0] + squares[1]) + (squares[2] + squares[3]);
    } else {
        uint32_t n = 0, sum = 0;
        uint64_t sum_sq = 0;
        j0 = j0 > 0 ? j0 : 0;
        j1 = j1 < nx ? j1 : nx;
        for (ptrdiff_t i = i0; i < i1; i++) {
            const SPOT_PIXEL *row = image + i * nx;
            const uint8_t *row_valid = valid + i * nx;
            for (ptrdiff_t j = j0; j < j1; j++) {
                uint32_t used = SPOT_USED(row[j], row_valid[j], max_valid);
                uint32_t v = (uint32_t)row[j] & -used;
                n += used;
                sum += v;
                sum_sq += (uint64_t)v * v;
            }
        }
        m = (double)n;
        x = (double)sum;
        y = (double)sum_sq;
    }
    return spot_dials_test((double)image[r * nx + c], m, x, y, prm);
}

/* Threshold rows [row_start, row_stop) into `out`; `work` holds nx + 2k uint32.
   Returns the first row not done (row_stop when all are). When a row holds a used value
   above the packing limit (unmasked rows: or above max_valid), *bright_row is set to it and the rows from the returned one
   up to bright_row + k are left to the caller. The overloads of the rows done are added
   to *overloads. */
SPOT_CLONES static ptrdiff_t SPOT_NAME(band)(
    const SPOT_PIXEL *image, const uint8_t *valid, uint8_t *out, ptrdiff_t ny,
    ptrdiff_t nx, ptrdiff_t row_start, ptrdiff_t row_stop, const spot_params *prm,
    uint32_t *work, ptrdiff_t *bright_row, int64_t *overloads) {
    int k = prm->kernel_size, shift = spot_count_shift(k);
    uint32_t limit = spot_value_limit(k), *columns = work + k, max_valid = prm->max_valid;
#if !SPOT_MASKED
    if (max_valid < limit) limit = max_valid;  /* rows holding an overload: to the caller */
#endif
    float factor = spot_screen_factor(prm);
    spot_u32x8 lanes;
    for (int j = 0; j < 8; j++) lanes[j] = j < 2 * k + 1 ? 0xFFFFFFFFu : 0u;
    if (limit == 0) {
        *bright_row = row_stop + k;  /* too large a kernel to pack: all rows to the caller */
        return row_start;
    }
    memset(work, 0, (size_t)(nx + 2 * k) * sizeof *work);
    ptrdiff_t lo = row_start - k > 0 ? row_start - k : 0;
    ptrdiff_t hi = row_start + k + 1 < ny ? row_start + k + 1 : ny;
    for (ptrdiff_t r = lo; r < hi; r++) {
        if (SPOT_NAME(columns)(image + r * nx, valid + r * nx, NULL, NULL, columns, nx,
                               shift, max_valid) > limit) {
            *bright_row = r;
            return row_start;
        }
    }
    for (ptrdiff_t r = row_start; r < row_stop; r++) {
        if (r > row_start) {
            ptrdiff_t enter = r + k, leave = r - k - 1;
            uint32_t largest = 0;
            if (enter < ny && leave >= 0)
                largest = SPOT_NAME(columns)(image + enter * nx, valid + enter * nx,
                                             image + leave * nx, valid + leave * nx,
                                             columns, nx, shift, max_valid);
            else if (enter < ny)
                largest = SPOT_NAME(columns)(image + enter * nx, valid + enter * nx, NULL,
                                             NULL, columns, nx, shift, max_valid);
            else if (leave >= 0)
                SPOT_NAME(remove)(image + leave * nx, valid + leave * nx, columns, nx,
                                  shift, max_valid);
            if (largest > limit) {
                *bright_row = enter;
                return r;
            }
        }
        uint8_t *row_out = out + r * nx;
        *overloads += SPOT_NAME(screen_any)(image + r * nx, valid + r * nx, work, row_out,
                                            nx, k, shift, prm->min_local, factor,
                                            max_valid);
        /* Survivors are rare: eight screen flags (bytes 0 or 1) at a time, visiting only
           the set ones. */
        ptrdiff_t c = 0;
        for (; c + 8 <= nx; c += 8) {
            uint64_t word;
            memcpy(&word, row_out + c, sizeof word);
            while (word != 0) {
                ptrdiff_t j = c + (__builtin_ctzll(word) >> 3);
                row_out[j] = (uint8_t)SPOT_NAME(exact)(image, valid, ny, nx, r, j, prm, lanes);
                word &= word - 1;
            }
        }
        for (; c < nx; c++)
            if (row_out[c])
                row_out[c] = (uint8_t)SPOT_NAME(exact)(image, valid, ny, nx, r, c, prm,
                                                       lanes);
    }
    return row_stop;
}

#undef SPOT_USED
