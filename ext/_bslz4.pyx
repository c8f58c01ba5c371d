# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: language_level=3
"""Bitshuffle-LZ4 chunk decoding with the GIL released (the C in `include/_bslz4.h`).

HDF5's filter pipeline decodes under h5py's global lock, so threads of one process never
overlap there; read chunks raw (`read_direct_chunk`, or from the detector's stream) and
decode them here instead, in as many threads as there are frames or blocks.
"""

from libc.stdint cimport int64_t, uint8_t


cdef extern from "_bslz4.h" nogil:
    int bslz4_decode_chunk(
        const uint8_t* src, size_t src_size, uint8_t* dst, size_t dst_size, size_t elem_size,
        int n_threads, int64_t* bad_block)


def bslz4_decode_kernel(
    const unsigned char[::1] chunk, unsigned char[::1] out, Py_ssize_t elem_size, int n_threads
):
    """Decode `chunk` (12-byte header included) into `out`; returns (status, bad_block).

    status 0 is success, else a negative BSLZ4_ERR_* code; lengths checked by the caller
    (chunk at least the header, out non-empty).
    """
    cdef int64_t bad_block = -1
    cdef int status
    with nogil:
        status = bslz4_decode_chunk(
            &chunk[0], chunk.shape[0], &out[0], out.shape[0], elem_size, n_threads, &bad_block
        )
    return status, bad_block
