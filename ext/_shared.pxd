# cython: language_level=3
"""Pixel types and inline helpers shared by the kernels of ext/ (`cimport`, never import).

One definition of each: a kernel that takes a detector's counts names the fused type of
that detector family here, and every clamp or FFT-index conversion is the one below
(pyFAI keeps its `shared_types.pxd` the same way). Declarations only and inline
functions: cimporting this file adds no module to import at run time.
"""

from libc.stdint cimport int32_t, uint16_t, uint32_t


# Counts of an MX detector frame (Eiger, Pilatus) as the spot finder takes them.
ctypedef fused mx_pixel_t:
    uint16_t
    uint32_t
    int32_t
    float

# Counts of a cryo-EM movie frame as the camera stores them (no converted copy is made).
ctypedef fused em_count_t:
    unsigned char
    signed char
    short
    unsigned short
    float

# Counts of a tomography projection as the detector writes it.
ctypedef fused projection_count_t:
    unsigned short
    unsigned int
    float


cdef inline Py_ssize_t clamp_index(Py_ssize_t index, Py_ssize_t n) noexcept nogil:
    """`index` clamped to 0..n-1: the nearest pixel of an n-pixel axis (edges repeat)."""
    return 0 if index < 0 else (n - 1 if index > n - 1 else index)


cdef inline Py_ssize_t clamp_to_range(double value, Py_ssize_t low, Py_ssize_t high) noexcept nogil:
    """A real coordinate as an integer in low..high: the bound it passes, else truncated."""
    if value < low:
        return low
    if value > high:
        return high
    return <Py_ssize_t>value


cdef inline Py_ssize_t signed_frequency(Py_ssize_t index, Py_ssize_t n) noexcept nogil:
    """Row `index` of an n-point FFT as a signed frequency: 0..n//2, then -(n - n//2 - 1)..-1."""
    return index if index <= n // 2 else index - n


# Integer counts of a photon-counting detector frame (Eiger, Pilatus, Jungfrau in photons)
# as the serial-crystallography hit finder takes them; its ring statistics are exact.
ctypedef fused photon_count_t:
    uint16_t
    uint32_t
    int32_t
