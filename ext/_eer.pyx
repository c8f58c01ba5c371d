# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Rendering of EER (Electron Event Representation) frames into count images.

One EER frame is a bitstream, read least significant bit first: a run length of
`rle_bits` bits (pixels without an electron), then, unless the run is the largest value
(a run that carries no electron), the electron's sub-pixel symbol: `sub_bits` bits of x
then `sub_bits` of y, each with its top bit inverted. The frame ends when the runs and
electrons cover width x height pixels. Compression 65000 (the first, 8-bit files) also
spends a symbol after a run of the largest value; 65001 and 65002 do not. Electrons are
added to `out` rendered at 1, 2 or 4 times the sensor's pixels per axis (4K, 8K, 16K
for a Falcon's 4096²) with the top bits of their sub-pixel position, so a group of
frames is summed without a second pass.
"""

from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.stdlib cimport free, malloc


cdef extern from *:
    void __builtin_prefetch(const void* address, int write, int locality) nogil


# Electrons prefetched ahead of the one being added.
cdef enum:
    _AHEAD = 16

# Results other than an electron count.
cdef enum:
    _TRUNCATED = -1  # the bitstream ends before its pixels are covered
    _OVERRUN = -2  # a run goes past the last pixel
    _SATURATED = -3  # a pixel of `out` would pass 65535

TRUNCATED = _TRUNCATED
OVERRUN = _OVERRUN
SATURATED = _SATURATED


cdef inline Py_ssize_t _refill(
    const uint8_t* data, Py_ssize_t n_bytes, Py_ssize_t next_byte, uint64_t* bits, int* n_bits
) noexcept nogil:
    """Append whole bytes to the bit buffer while it has room; the next byte to read."""
    while n_bits[0] <= 56 and next_byte < n_bytes:
        bits[0] |= (<uint64_t>data[next_byte]) << n_bits[0]
        n_bits[0] += 8
        next_byte += 1
    return next_byte


def eer_render_kernel(
    const uint8_t[::1] data,
    Py_ssize_t width,
    Py_ssize_t height,
    int rle_bits,
    int sub_bits,
    bint symbol_after_skip,
    int upsampling_bits,
    uint16_t[:, ::1] out,
):
    """Add the electrons of one frame's bitstream to `out`; their number, or a negative
    code (TRUNCATED, OVERRUN, SATURATED). Arguments checked by the caller.

    Two steps: decode every electron's pixel of `out` into a list, then add them, with
    the pixels a few electrons ahead prefetched (a 4K fraction is larger than the caches,
    and decoding alone gives the memory no work to overlap).
    """
    cdef Py_ssize_t total = width * height, position = 0, n_bytes = data.shape[0]
    cdef Py_ssize_t next_byte = 0, x, y, i, out_width = out.shape[1]
    cdef Py_ssize_t electrons = 0
    cdef uint64_t bits = 0, skip = (1 << rle_bits) - 1, sub_mask = (1 << sub_bits) - 1
    cdef uint64_t flip = 1 << (sub_bits - 1), run, symbol, x_sub, y_sub
    cdef int n_bits = 0, symbol_bits = 2 * sub_bits, drop = sub_bits - upsampling_bits
    cdef int result = 0
    # Each electron costs at least rle_bits + symbol_bits bits of the stream.
    cdef Py_ssize_t capacity = n_bytes * 8 // (rle_bits + symbol_bits) + 1
    cdef Py_ssize_t* pixels = <Py_ssize_t*>malloc(capacity * sizeof(Py_ssize_t))
    cdef uint16_t* image = &out[0, 0]
    if pixels == NULL:
        raise MemoryError()
    try:
        with nogil:
            while True:
                next_byte = _refill(&data[0], n_bytes, next_byte, &bits, &n_bits)
                if n_bits < rle_bits:
                    result = _TRUNCATED
                    break
                run = bits & skip
                bits >>= rle_bits
                n_bits -= rle_bits
                position += <Py_ssize_t>run
                if position == total:
                    break
                if position > total:
                    result = _OVERRUN
                    break
                if run == skip and not symbol_after_skip:
                    continue
                if n_bits < symbol_bits:
                    next_byte = _refill(&data[0], n_bytes, next_byte, &bits, &n_bits)
                    if n_bits < symbol_bits:
                        result = _TRUNCATED
                        break
                symbol = bits
                bits >>= symbol_bits
                n_bits -= symbol_bits
                if run == skip:
                    continue
                x_sub = (symbol & sub_mask) ^ flip
                y_sub = ((symbol >> sub_bits) & sub_mask) ^ flip
                x = ((position % width) << upsampling_bits) | <Py_ssize_t>(x_sub >> drop)
                y = ((position // width) << upsampling_bits) | <Py_ssize_t>(y_sub >> drop)
                pixels[electrons] = y * out_width + x
                electrons += 1
                position += 1
                if position == total:
                    break
            if result == 0:
                for i in range(electrons):
                    if i + _AHEAD < electrons:
                        __builtin_prefetch(&image[pixels[i + _AHEAD]], 1, 0)
                    if image[pixels[i]] == 65535:
                        result = _SATURATED
                        break
                    image[pixels[i]] += 1
    finally:
        free(pixels)
    return result if result < 0 else electrons
