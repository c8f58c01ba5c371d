/* Bitshuffle-LZ4 decoding (the HDF5 bitshuffle filter's framing, as DECTRIS detectors
 * write it to files and to Stream V2), in C so the kernels call it with the GIL released.
 *
 * Framing (bitshuffle's bshuf_h5filter.c, DECTRIS's compression tag 56500 "bslz4"):
 *   uint64 big-endian  uncompressed size in bytes
 *   uint32 big-endian  block size in bytes (0: bitshuffle's default, 8192 bytes)
 *   per block:         uint32 big-endian compressed size, then one LZ4 block
 *   then the last (n_elements % 8) elements stored as they are.
 * Full blocks hold block_size / elem_size elements; the last block holds the rest
 * rounded down to a multiple of 8. Each block is a bit transpose of its elements: row
 * 8 * byte + bit holds that bit of every element, 8 elements per byte, LSB first.
 * LZ4 block format: lz4/doc/lz4_Block_format.md (sequences of token, literals, offset,
 * match length; the last sequence holds literals only).
 */
#ifndef PREFECT_BEAMLINE_BSLZ4_H
#define PREFECT_BEAMLINE_BSLZ4_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <emmintrin.h> /* SSE2: every x86-64 CPU has it */
#ifdef _OPENMP
#include <omp.h>
#endif

#define BSLZ4_HEADER_BYTES 12
#define BSLZ4_DEFAULT_BLOCK_BYTES 8192
#define BSLZ4_MAX_BLOCK_BYTES (1 << 20)

/* Error codes (negative): what the Python face turns into a message. */
#define BSLZ4_ERR_HEADER -1    /* shorter than the 12-byte header */
#define BSLZ4_ERR_SIZE -2      /* header's size differs from the output buffer's */
#define BSLZ4_ERR_BLOCKSIZE -3 /* block size not a multiple of 8 elements, or too large */
#define BSLZ4_ERR_TRUNCATED -4 /* a block runs past the end of the input */
#define BSLZ4_ERR_CORRUPT -5   /* an LZ4 block is malformed or decodes to the wrong size */
#define BSLZ4_ERR_TRAILING -6  /* bytes left over after the last block */
#define BSLZ4_ERR_NOMEMORY -7

static inline uint64_t bslz4_read_u64_be(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static inline uint32_t bslz4_read_u32_be(const uint8_t* p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Elements per full block for a header's block size in bytes; negative on error. */
static inline int64_t bslz4_block_elements(uint32_t block_bytes, size_t elem_size) {
    int64_t n;
    if (block_bytes == 0) {
        n = (int64_t)(BSLZ4_DEFAULT_BLOCK_BYTES / elem_size);
        n -= n % 8;
        return n < 128 ? 128 : n;
    }
    if (block_bytes % elem_size != 0 || block_bytes > BSLZ4_MAX_BLOCK_BYTES) return BSLZ4_ERR_BLOCKSIZE;
    n = (int64_t)(block_bytes / elem_size);
    if (n == 0 || n % 8 != 0) return BSLZ4_ERR_BLOCKSIZE;
    return n;
}

/* Slack after each scratch block: the LZ4 decoder copies 16 bytes at a time and may
 * write up to 31 bytes past the block's end (never past this). */
#define BSLZ4_PAD 32

/* 16 bytes from s to d (unaligned; one SSE2 load and store). */
static inline void bslz4_copy16(uint8_t* d, const uint8_t* s) { memcpy(d, s, 16); }

/* One LZ4 block into exactly dst_size bytes; 0 or BSLZ4_ERR_CORRUPT. `dst` has
 * BSLZ4_PAD writable bytes beyond dst_size. Copies go 16 bytes at a time: literals
 * when the input holds 16 bytes past them, matches at offsets of 16 or more at once,
 * shorter offsets after their first period is laid down (a multiple of the offset of at
 * least 16 bytes), runs of one byte by memset (the zeros of low-count frames). */
static inline int bslz4_lz4_block(const uint8_t* src, size_t src_size, uint8_t* dst, size_t dst_size) {
    const uint8_t* ip = src;
    const uint8_t* const iend = src + src_size;
    uint8_t* op = dst;
    uint8_t* const oend = dst + dst_size;
    while (ip < iend) {
        unsigned token = *ip++;
        size_t length = token >> 4;
        if (length == 15) {
            unsigned s;
            do {
                if (ip >= iend) return BSLZ4_ERR_CORRUPT;
                s = *ip++;
                length += s;
            } while (s == 255);
        }
        if ((size_t)(iend - ip) < length || (size_t)(oend - op) < length) return BSLZ4_ERR_CORRUPT;
        if ((size_t)(iend - ip) >= length + 16) {
            uint8_t* d = op;
            const uint8_t* s = ip;
            do { bslz4_copy16(d, s); d += 16; s += 16; } while (d < op + length);
        } else {
            memcpy(op, ip, length);
        }
        ip += length;
        op += length;
        if (ip == iend) break; /* the last sequence: literals only */
        if (iend - ip < 2) return BSLZ4_ERR_CORRUPT;
        size_t offset = (size_t)ip[0] | ((size_t)ip[1] << 8);
        ip += 2;
        if (offset == 0 || offset > (size_t)(op - dst)) return BSLZ4_ERR_CORRUPT;
        length = token & 15;
        if (length == 15) {
            unsigned s;
            do {
                if (ip >= iend) return BSLZ4_ERR_CORRUPT;
                s = *ip++;
                length += s;
            } while (s == 255);
        }
        length += 4;
        if ((size_t)(oend - op) < length) return BSLZ4_ERR_CORRUPT;
        const uint8_t* match = op - offset;
        uint8_t* const end = op + length;
        if (offset >= 16) {
            /* Each 16-byte copy reads bytes already written (the source trails by 16+). */
            do { bslz4_copy16(op, match); op += 16; match += 16; } while (op < end);
        } else if (offset == 1 || (offset == 2 && match[0] == match[1])) {
            memset(op, *match, length); /* a run of one byte: the zeros of low counts */
        } else if (16 % offset == 0) {
            /* Periods of 2, 4 or 8 bytes: 16 of them in a register, stored 16 at a time
             * (copying from 16 bytes back would wait on each store). */
            uint8_t pattern[16];
            for (size_t i = 0; i < 16; i++) pattern[i] = match[i % offset];
            __m128i repeat = _mm_loadu_si128((const __m128i*)pattern);
            for (; op < end; op += 16) _mm_storeu_si128((__m128i*)op, repeat);
        } else {
            /* Period `offset`: lay down one stretch of `span` bytes (a multiple of the
             * period, 16 to 30 bytes) byte by byte, then copy 16 at a time from `span`
             * back, which repeats the period. */
            size_t span = offset * ((16 + offset - 1) / offset);
            size_t first = length < span ? length : span;
            for (size_t i = 0; i < first; i++) op[i] = match[i];
            for (op += span; op < end; op += 16) bslz4_copy16(op, op - span);
        }
        op = end;
    }
    return op == oend ? 0 : BSLZ4_ERR_CORRUPT;
}

/* 8 x 8 bit transpose of a uint64 whose byte r holds row r (bit c = column c). */
static inline uint64_t bslz4_transpose8(uint64_t x) {
    uint64_t t;
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;
    x = x ^ t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL;
    x = x ^ t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL;
    x = x ^ t ^ (t << 28);
    return x;
}

/* The same transpose on both 64-bit halves of an SSE2 vector. */
static inline __m128i bslz4_transpose8x2(__m128i x) {
    __m128i t;
    t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 7)), _mm_set1_epi64x(0x00AA00AA00AA00AALL));
    x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 7));
    t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 14)), _mm_set1_epi64x(0x0000CCCC0000CCCCLL));
    x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 14));
    t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 28)), _mm_set1_epi64x(0x00000000F0F0F0F0LL));
    x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64(t, 28));
    return x;
}

/* Byte k of 128 elements from one byte plane: rows rows[0], rows[stride], ...,
 * rows[7 * stride] (bit b of byte k), 16 bytes each (8 elements a byte, LSB first).
 * An 8 x 16 byte transpose (three rounds of unpacks) puts the 8 row bytes of each group
 * of 8 elements in one 64-bit lane, then a bit transpose per lane: c[v] holds byte k of
 * elements 16 v .. 16 v + 15, in order. */
static inline void bslz4_plane16(const uint8_t* rows, size_t stride, __m128i c[8]) {
    __m128i r[8], a[8], b[8];
    for (int i = 0; i < 8; i++) r[i] = _mm_loadu_si128((const __m128i*)(rows + (size_t)i * stride));
    for (int i = 0; i < 4; i++) {
        a[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);     /* columns 0..7 */
        a[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]); /* columns 8..15 */
    }
    for (int h = 0; h < 2; h++) { /* rows 0-3 (h = 0) and 4-7 (h = 1) */
        b[4 * h + 0] = _mm_unpacklo_epi16(a[4 * h + 0], a[4 * h + 2]); /* columns 0..3 */
        b[4 * h + 1] = _mm_unpackhi_epi16(a[4 * h + 0], a[4 * h + 2]); /* 4..7 */
        b[4 * h + 2] = _mm_unpacklo_epi16(a[4 * h + 1], a[4 * h + 3]); /* 8..11 */
        b[4 * h + 3] = _mm_unpackhi_epi16(a[4 * h + 1], a[4 * h + 3]); /* 12..15 */
    }
    for (int q = 0; q < 4; q++) {
        c[2 * q] = bslz4_transpose8x2(_mm_unpacklo_epi32(b[q], b[4 + q]));
        c[2 * q + 1] = bslz4_transpose8x2(_mm_unpackhi_epi32(b[q], b[4 + q]));
    }
}

/* The 8 bytes at rows[0], rows[stride], ..., rows[7 * stride] as one uint64 (row b in
 * byte b), bit-transposed: byte i then holds bit b of row b's column i. */
static inline uint64_t bslz4_gather_transposed(const uint8_t* rows, size_t stride) {
    uint64_t x = 0;
    for (int b = 0; b < 8; b++) x |= (uint64_t)rows[b * stride] << (8 * b);
    return x ? bslz4_transpose8(x) : 0;
}

/* True when the `size` bytes at p are all zero. */
static inline int bslz4_all_zero(const uint8_t* p, size_t size) {
    __m128i any = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 16 <= size; i += 16) any = _mm_or_si128(any, _mm_loadu_si128((const __m128i*)(p + i)));
    int zero = _mm_movemask_epi8(_mm_cmpeq_epi8(any, _mm_setzero_si128())) == 0xFFFF;
    for (; i < size; i++) zero &= p[i] == 0;
    return zero;
}

#define BSLZ4_MAX_PLANES 8 /* element sizes up to 8 bytes take the vector path */

/* Undo the bit transpose of one block of n elements (n a multiple of 8). Byte plane k
 * (rows 8 k .. 8 k + 7) holds byte k of every element; low-count frames leave most
 * planes of a block all zero, and those are never transposed. 128 elements at a time
 * with SSE2 (part of x86-64, so no dispatch), then the rest 8 at a time. */
static inline void bslz4_unshuffle(const uint8_t* in, uint8_t* out, size_t n, size_t elem_size) {
    const size_t row_bytes = n / 8;
    const size_t plane_bytes = 8 * row_bytes;
    const size_t wide = elem_size <= BSLZ4_MAX_PLANES ? row_bytes - row_bytes % 16 : 0;
    int nonzero[BSLZ4_MAX_PLANES];
    for (size_t k = 0; k < elem_size && k < BSLZ4_MAX_PLANES; k++)
        nonzero[k] = !bslz4_all_zero(in + k * plane_bytes, plane_bytes);
    const __m128i zero = _mm_setzero_si128();
    for (size_t g = 0; g < wide; g += 16) {
        __m128i p[BSLZ4_MAX_PLANES][8];
        for (size_t k = 0; k < elem_size; k++) {
            if (nonzero[k]) bslz4_plane16(in + k * plane_bytes + g, row_bytes, p[k]);
            else for (int v = 0; v < 8; v++) p[k][v] = zero;
        }
        uint8_t* o = out + 8 * g * elem_size; /* element 8 g */
        for (int v = 0; v < 8; v++, o += 16 * elem_size) {
            if (elem_size == 1) {
                _mm_storeu_si128((__m128i*)o, p[0][v]);
            } else if (elem_size == 2) {
                _mm_storeu_si128((__m128i*)o, _mm_unpacklo_epi8(p[0][v], p[1][v]));
                _mm_storeu_si128((__m128i*)(o + 16), _mm_unpackhi_epi8(p[0][v], p[1][v]));
            } else if (elem_size == 4) {
                __m128i lo01 = _mm_unpacklo_epi8(p[0][v], p[1][v]);
                __m128i hi01 = _mm_unpackhi_epi8(p[0][v], p[1][v]);
                __m128i lo23 = _mm_unpacklo_epi8(p[2][v], p[3][v]);
                __m128i hi23 = _mm_unpackhi_epi8(p[2][v], p[3][v]);
                _mm_storeu_si128((__m128i*)o, _mm_unpacklo_epi16(lo01, lo23));
                _mm_storeu_si128((__m128i*)(o + 16), _mm_unpackhi_epi16(lo01, lo23));
                _mm_storeu_si128((__m128i*)(o + 32), _mm_unpacklo_epi16(hi01, hi23));
                _mm_storeu_si128((__m128i*)(o + 48), _mm_unpackhi_epi16(hi01, hi23));
            } else {
                uint8_t bytes[BSLZ4_MAX_PLANES][16];
                for (size_t k = 0; k < elem_size; k++) _mm_storeu_si128((__m128i*)bytes[k], p[k][v]);
                for (int i = 0; i < 16; i++)
                    for (size_t k = 0; k < elem_size; k++) o[i * elem_size + k] = bytes[k][i];
            }
        }
    }
    for (size_t g = wide; g < row_bytes; g++) {
        uint8_t* group = out + 8 * g * elem_size;
        for (size_t k = 0; k < elem_size; k++) {
            uint64_t x = bslz4_gather_transposed(in + k * plane_bytes + g, row_bytes);
            for (int i = 0; i < 8; i++) group[i * elem_size + k] = (uint8_t)(x >> (8 * i));
        }
    }
}

/* Elements in block `index` of a chunk of n elements with full blocks of block_n. */
static inline size_t bslz4_block_length(size_t index, size_t n, size_t block_n) {
    size_t full = n / block_n;
    if (index < full) return block_n;
    size_t leftover = n % block_n;
    return leftover - leftover % 8;
}

/* Number of compressed blocks of a chunk. */
static inline size_t bslz4_n_blocks(size_t n, size_t block_n) {
    size_t leftover = n % block_n;
    return n / block_n + (leftover - leftover % 8 > 0 ? 1 : 0);
}

/* Decode one block; `scratch` holds at least n * elem_size + BSLZ4_PAD bytes. */
static inline int bslz4_decode_block(
    const uint8_t* src, size_t src_size, uint8_t* dst, size_t n, size_t elem_size, uint8_t* scratch) {
    int status = bslz4_lz4_block(src, src_size, scratch, n * elem_size);
    if (status) return status;
    bslz4_unshuffle(scratch, dst, n, elem_size);
    return 0;
}

/* Decode a whole chunk (header included) into dst, which holds exactly dst_size bytes,
 * over n_threads OpenMP threads (blocks are independent once their offsets are known).
 * Returns 0 or a BSLZ4_ERR_* code; *bad_block is the failing block's index (or -1). */
static inline int bslz4_decode_chunk(
    const uint8_t* src, size_t src_size, uint8_t* dst, size_t dst_size, size_t elem_size,
    int n_threads, int64_t* bad_block) {
    *bad_block = -1;
    if (src_size < BSLZ4_HEADER_BYTES) return BSLZ4_ERR_HEADER;
    uint64_t total = bslz4_read_u64_be(src);
    if (total != dst_size || total % elem_size != 0) return BSLZ4_ERR_SIZE;
    int64_t block_n = bslz4_block_elements(bslz4_read_u32_be(src + 8), elem_size);
    if (block_n < 0) return (int)block_n;
    size_t n = total / elem_size;
    size_t n_blocks = bslz4_n_blocks(n, (size_t)block_n);
    size_t* starts = (size_t*)malloc((n_blocks + 1) * sizeof(size_t));
    const size_t scratch_bytes = (size_t)block_n * elem_size + BSLZ4_PAD;
    uint8_t* scratch = (uint8_t*)malloc((size_t)(n_threads > 0 ? n_threads : 1) * scratch_bytes);
    int status = 0;
    if (starts == NULL || scratch == NULL) {
        free(starts);
        free(scratch);
        return BSLZ4_ERR_NOMEMORY;
    }
    /* Block offsets: a walk over the 4-byte size prefixes only. */
    size_t at = BSLZ4_HEADER_BYTES;
    for (size_t b = 0; b < n_blocks; b++) {
        if (src_size - at < 4) { status = BSLZ4_ERR_TRUNCATED; *bad_block = (int64_t)b; break; }
        size_t size = bslz4_read_u32_be(src + at);
        if (src_size - at - 4 < size) { status = BSLZ4_ERR_TRUNCATED; *bad_block = (int64_t)b; break; }
        starts[b] = at;
        at += 4 + size;
    }
    size_t tail_bytes = (n % 8) * elem_size;
    if (status == 0 && src_size - at != tail_bytes) status = BSLZ4_ERR_TRAILING;
    if (status == 0) {
        int64_t failed = -1;
        int failed_status = 0;
        #pragma omp parallel for schedule(static) num_threads(n_threads > 0 ? n_threads : 1) if (n_threads > 1)
        for (int64_t b = 0; b < (int64_t)n_blocks; b++) {
            int thread = 0;
#ifdef _OPENMP
            thread = omp_get_thread_num();
#endif
            size_t length = bslz4_block_length((size_t)b, n, (size_t)block_n);
            int s = bslz4_decode_block(
                src + starts[b] + 4, bslz4_read_u32_be(src + starts[b]),
                dst + (size_t)b * (size_t)block_n * elem_size, length, elem_size,
                scratch + (size_t)thread * scratch_bytes);
            if (s) {
                #pragma omp critical
                { if (failed < 0 || b < failed) { failed = b; failed_status = s; } }
            }
        }
        if (failed >= 0) { status = failed_status; *bad_block = failed; }
        else if (tail_bytes) memcpy(dst + total - tail_bytes, src + at, tail_bytes);
    }
    free(starts);
    free(scratch);
    return status;
}

/* A chunk decoded in order, a few blocks at a time, for a caller that works on the
 * rows decoded so far while they are still in cache (spot finding fused with decoding). */
typedef struct {
    const uint8_t* src;
    size_t src_size;
    uint8_t* dst;
    size_t elem_size, n, block_n, n_blocks;
    size_t next_block; /* the next block to decode */
    size_t at;         /* its offset in src */
    size_t decoded;    /* elements decoded so far (dst[0 .. decoded * elem_size)) */
    uint8_t* scratch;
} bslz4_cursor;

/* Check the header and set the cursor up; 0 or a BSLZ4_ERR_* code. */
static inline int bslz4_cursor_open(
    bslz4_cursor* c, const uint8_t* src, size_t src_size, uint8_t* dst, size_t dst_size,
    size_t elem_size) {
    memset(c, 0, sizeof *c);
    if (src_size < BSLZ4_HEADER_BYTES) return BSLZ4_ERR_HEADER;
    uint64_t total = bslz4_read_u64_be(src);
    if (total != dst_size || total % elem_size != 0) return BSLZ4_ERR_SIZE;
    int64_t block_n = bslz4_block_elements(bslz4_read_u32_be(src + 8), elem_size);
    if (block_n < 0) return (int)block_n;
    c->src = src;
    c->src_size = src_size;
    c->dst = dst;
    c->elem_size = elem_size;
    c->n = total / elem_size;
    c->block_n = (size_t)block_n;
    c->n_blocks = bslz4_n_blocks(c->n, c->block_n);
    c->at = BSLZ4_HEADER_BYTES;
    c->scratch = (uint8_t*)malloc(c->block_n * elem_size + BSLZ4_PAD);
    return c->scratch == NULL ? BSLZ4_ERR_NOMEMORY : 0;
}

/* Decode blocks until at least `elements` elements are decoded (all of them, the
 * stored tail included, once `elements` reaches the chunk's count); 0 or a BSLZ4_ERR_*
 * code, *bad_block the failing block. */
static inline int bslz4_cursor_advance(bslz4_cursor* c, size_t elements, int64_t* bad_block) {
    *bad_block = -1;
    while (c->decoded < elements && c->next_block < c->n_blocks) {
        size_t b = c->next_block;
        if (c->src_size - c->at < 4) { *bad_block = (int64_t)b; return BSLZ4_ERR_TRUNCATED; }
        size_t size = bslz4_read_u32_be(c->src + c->at);
        if (c->src_size - c->at - 4 < size) { *bad_block = (int64_t)b; return BSLZ4_ERR_TRUNCATED; }
        size_t length = bslz4_block_length(b, c->n, c->block_n);
        int status = bslz4_decode_block(c->src + c->at + 4, size, c->dst + c->decoded * c->elem_size,
                                        length, c->elem_size, c->scratch);
        if (status) { *bad_block = (int64_t)b; return status; }
        c->at += 4 + size;
        c->decoded += length;
        c->next_block++;
    }
    if (c->decoded < elements && c->decoded < c->n) { /* the last n % 8 elements, as stored */
        size_t tail_bytes = (c->n - c->decoded) * c->elem_size;
        if (c->src_size - c->at != tail_bytes) return BSLZ4_ERR_TRAILING;
        memcpy(c->dst + c->decoded * c->elem_size, c->src + c->at, tail_bytes);
        c->at += tail_bytes;
        c->decoded = c->n;
    } else if (c->decoded == c->n && c->src_size != c->at) {
        return BSLZ4_ERR_TRAILING;
    }
    return 0;
}

static inline void bslz4_cursor_close(bslz4_cursor* c) {
    free(c->scratch);
    c->scratch = NULL;
}

#endif
