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

/* One LZ4 block into exactly dst_size bytes; 0 or BSLZ4_ERR_CORRUPT. */
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
        memcpy(op, ip, length);
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
        if (offset == 1) {
            memset(op, *match, length); /* a run of one byte: zeros of low-count frames */
            op += length;
        } else {
            /* The match repeats with period `offset`: copy from `match` in steps that
             * double (op - match grows by each copy), so long overlapping runs take a
             * few memcpy calls. */
            while (length > 0) {
                size_t step = (size_t)(op - match);
                if (step > length) step = length;
                memcpy(op, match, step);
                op += step;
                length -= step;
            }
        }
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

/* The 8 bytes at rows[0], rows[stride], ..., rows[7 * stride] as one uint64 (row b in
 * byte b), bit-transposed: byte i then holds bit b of row b's column i. */
static inline uint64_t bslz4_gather_transposed(const uint8_t* rows, size_t stride) {
    uint64_t x = 0;
    for (int b = 0; b < 8; b++) x |= (uint64_t)rows[b * stride] << (8 * b);
    return x ? bslz4_transpose8(x) : 0;
}

/* True when the `size` bytes at p (a multiple of 8) are all zero. */
static inline int bslz4_all_zero8(const uint8_t* p, size_t size) {
    uint64_t any = 0;
    for (size_t i = 0; i < size; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        any |= word;
    }
    return any == 0;
}

/* Rows row[0], row[stride], ..., row[7 * stride] (8 bytes each: 8 groups of 8
 * elements) transposed into y[j] (j = group): byte i of y[j] holds bit b of element
 * 8 j + i in its bit b. An 8 x 8 byte transpose, then an 8 x 8 bit transpose per group. */
static inline void bslz4_plane8(const uint8_t* row, size_t stride, uint64_t y[8]) {
    uint64_t t;
    for (int b = 0; b < 8; b++) memcpy(&y[b], row + b * stride, 8);
    for (int b = 0; b < 8; b += 2) {
        t = ((y[b] >> 8) ^ y[b + 1]) & 0x00FF00FF00FF00FFULL;
        y[b + 1] ^= t;
        y[b] ^= t << 8;
    }
    for (int b = 0; b < 8; b += (b % 4 == 1) ? 3 : 1) {
        t = ((y[b] >> 16) ^ y[b + 2]) & 0x0000FFFF0000FFFFULL;
        y[b + 2] ^= t;
        y[b] ^= t << 16;
    }
    for (int b = 0; b < 4; b++) {
        t = ((y[b] >> 32) ^ y[b + 4]) & 0x00000000FFFFFFFFULL;
        y[b + 4] ^= t;
        y[b] ^= t << 32;
    }
    for (int j = 0; j < 8; j++) y[j] = y[j] ? bslz4_transpose8(y[j]) : 0;
}

/* Undo the bit transpose of one block of n elements (n a multiple of 8). Byte plane k
 * (rows 8 k .. 8 k + 7) holds byte k of every element; low-count frames leave most
 * planes of a block all zero, which are skipped. 64 elements at a time, then the rest. */
static inline void bslz4_unshuffle(const uint8_t* in, uint8_t* out, size_t n, size_t elem_size) {
    const size_t row_bytes = n / 8;
    const size_t wide = row_bytes - row_bytes % 8;
    int nonzero[8];
    for (size_t k = 0; k < elem_size && k < 8; k++)
        nonzero[k] = !bslz4_all_zero8(in + 8 * k * row_bytes, 8 * row_bytes);
    size_t g = 0;
    if (elem_size <= 8) {
        uint64_t y[8][8];
        for (; g < wide; g += 8) {
            for (size_t k = 0; k < elem_size; k++) {
                if (nonzero[k]) bslz4_plane8(in + 8 * k * row_bytes + g, row_bytes, y[k]);
                else memset(y[k], 0, sizeof(y[k]));
            }
            if (elem_size == 4) {
                uint32_t* o = (uint32_t*)out + 8 * g;
                for (int j = 0; j < 8; j++)
                    for (int i = 0; i < 8; i++)
                        o[8 * j + i] = (uint32_t)((y[0][j] >> (8 * i)) & 0xFF) |
                                       (uint32_t)((y[1][j] >> (8 * i)) & 0xFF) << 8 |
                                       (uint32_t)((y[2][j] >> (8 * i)) & 0xFF) << 16 |
                                       (uint32_t)((y[3][j] >> (8 * i)) & 0xFF) << 24;
            } else if (elem_size == 2) {
                uint16_t* o = (uint16_t*)out + 8 * g;
                for (int j = 0; j < 8; j++)
                    for (int i = 0; i < 8; i++)
                        o[8 * j + i] = (uint16_t)(((y[0][j] >> (8 * i)) & 0xFF) |
                                                  ((y[1][j] >> (8 * i)) & 0xFF) << 8);
            } else {
                uint8_t* o = out + 8 * g * elem_size;
                for (int j = 0; j < 8; j++)
                    for (int i = 0; i < 8; i++)
                        for (size_t k = 0; k < elem_size; k++)
                            o[(8 * j + i) * elem_size + k] = (uint8_t)(y[k][j] >> (8 * i));
            }
        }
    }
    for (; g < row_bytes; g++) {
        uint8_t* group = out + 8 * g * elem_size;
        for (size_t k = 0; k < elem_size; k++) {
            uint64_t x = bslz4_gather_transposed(in + 8 * k * row_bytes + g, row_bytes);
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

/* Decode one block; `scratch` holds at least block_n * elem_size bytes. */
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
    uint8_t* scratch = (uint8_t*)malloc((size_t)(n_threads > 0 ? n_threads : 1) * (size_t)block_n * elem_size);
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
                scratch + (size_t)thread * (size_t)block_n * elem_size);
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

#endif
