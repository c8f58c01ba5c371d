"""Argument checks for the Python faces of ext/: one helper per kind of check, one thread rule.

The Cython kernels trust what they are given (no bounds checks, fixed dtypes, C order),
so every face checks its arguments with these before it calls one. A failed check
raises ValueError (TypeError for a value of the wrong kind) naming the argument, what it
is and what was expected; a shape that must agree with another argument's names both
and both shapes, as scikit-image's `radon_transform` does.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

# numpy dtype kinds, as `require_array(kinds=...)` takes them.
_KIND_NAMES = {
    "b": "bool",
    "i": "signed integer",
    "u": "unsigned integer",
    "f": "floating point",
    "c": "complex",
}
REAL_KINDS = "iuf"
"""Integer or floating point: what a face converts to float32 or float64 for its kernel."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def kernel_threads(n_threads: int | None) -> int:
    """OpenMP threads for a kernel: the one thread rule of every face.

    None or 0 means every core this process may run on (`available_cores`); a positive
    count is used as given, also above the number of cores (no cap: the caller may
    share cores with other work on purpose); a negative count is an error.
    """
    if n_threads is None:
        return available_cores()
    count = require_integer("n_threads", n_threads, minimum=0)
    return count if count > 0 else available_cores()


def require_integer(name: str, value: object, *, minimum: int | None = None) -> int:
    """`value` as an int (Python or numpy integer, not bool), at least `minimum`."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        integer = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None
    if minimum is not None and integer < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {integer}")
    return integer


def require_number(
    name: str, value: object, *, above: float | None = None, at_least: float | None = None
) -> float:
    """`value` as a finite float, greater than `above` and not below `at_least` if given."""
    real = int | float | np.integer | np.floating
    if isinstance(value, bool | np.bool_) or not isinstance(value, real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if above is not None and not number > above:
        raise ValueError(f"{name} must be greater than {above}, got {number}")
    if at_least is not None and not number >= at_least:
        raise ValueError(f"{name} must be at least {at_least}, got {number}")
    return number


def _dtype_names(dtypes: Sequence[DTypeLike]) -> str:
    names = [np.dtype(dtype).name for dtype in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def require_array(
    name: str,
    value: object,
    *,
    ndim: int | Sequence[int] | None = None,
    axes: str | None = None,
    dtypes: Sequence[DTypeLike] | None = None,
    kinds: str | None = None,
    contiguous: bool = False,
) -> np.ndarray:
    """`value`, checked: a numpy array of `ndim` dimensions (one of them, for a sequence),
    of one of `dtypes` (exactly, native byte order) or of one of the numpy dtype `kinds`
    (e.g. `REAL_KINDS`), C-contiguous if `contiguous`. `axes` ("(angle, row, column)")
    names the dimensions in the message. No copy is made: a face that can take any layout
    converts the checked array itself.
    """
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(value).__name__}")
    described = f" {axes}" if axes else ""
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            dims = " or ".join(f"{n}-D" for n in allowed)
            raise ValueError(f"{name} must be {dims}{described}, got shape {value.shape}")
    if dtypes is not None and not any(value.dtype == dtype for dtype in dtypes):
        got = str(value.dtype)
        if not value.dtype.isnative:
            got += f" ({value.dtype.name} in non-native byte order)"
        raise ValueError(f"{name} must be of dtype {_dtype_names(dtypes)}, got {got}")
    if kinds is not None and value.dtype.kind not in kinds:
        names = [_KIND_NAMES.get(kind, kind) for kind in kinds]
        expected = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        raise ValueError(f"{name} must be of dtype {expected}, got {value.dtype}")
    if contiguous and not value.flags.c_contiguous:
        raise ValueError(
            f"{name} must be C-contiguous (np.ascontiguousarray), got a strided "
            f"{value.dtype} array of shape {value.shape}"
        )
    return value


def require_buffer(
    name: str,
    value: object,
    dtype: DTypeLike,
    *,
    ndim: int | None = None,
    axes: str | None = None,
) -> np.ndarray:
    """`value` as a kernel reads or writes it in place, with no copy: a numpy array of
    exactly `dtype`, C-contiguous, of `ndim` dimensions (named by `axes`) if given."""
    return require_array(name, value, ndim=ndim, axes=axes, dtypes=(dtype,), contiguous=True)


def output_buffer(
    name: str, out: np.ndarray | None, shape: Sequence[int], dtype: DTypeLike, *, source: str
) -> np.ndarray:
    """A new array of `shape` and `dtype` when `out` is None, else `out` checked as the
    buffer a kernel writes (`require_buffer`) of that shape, which `source` fixes (as
    `require_shape` names it)."""
    if out is None:
        return np.empty(tuple(shape), dtype=dtype)
    require_buffer(name, out, dtype)
    require_shape(name, out, shape, source=source)
    return out


def kernel_input(
    name: str,
    value: object,
    dtype: DTypeLike,
    shape: Sequence[int],
    *,
    source: str,
    kinds: str = REAL_KINDS,
) -> np.ndarray:
    """`value`, a numpy array of one of the dtype `kinds` and of `shape` (which `source`
    fixes, as `require_shape` names it), as the C-contiguous `dtype` array a kernel
    reads: converted, copied only where it is not that already."""
    array = require_array(name, value, kinds=kinds)
    require_shape(name, array, shape, source=source)
    return np.ascontiguousarray(array, dtype=dtype)


def require_shape(name: str, array: np.ndarray, expected: Sequence[int], *, source: str) -> None:
    """`array.shape == expected`; else a ValueError naming both shapes and what fixes
    `expected` (`source`, e.g. "the projections' (row, column)")."""
    expected = tuple(int(size) for size in expected)
    if array.shape != expected:
        raise ValueError(f"{name} shape {array.shape} differs from {source} shape {expected}")


def require_same_shape(**arrays: np.ndarray) -> tuple[int, ...]:
    """The one shape of all `arrays`, named by their keywords; the first is the reference
    each other is compared with (the error names both arrays and both shapes)."""
    (first_name, first), *others = arrays.items()
    for name, array in others:
        require_shape(name, array, first.shape, source=first_name)
    return tuple(first.shape)
