"""The argument checks every face of ext/ shares (`ext/arguments.py`), and its thread rule."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefect_beamline.ext import arguments
from prefect_beamline.ext.arguments import (
    REAL_KINDS,
    available_cores,
    kernel_threads,
    require_array,
    require_integer,
    require_number,
    require_same_shape,
    require_shape,
)


def test_available_cores_are_those_this_process_may_run_on() -> None:
    expected = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    assert available_cores() == expected >= 1


@pytest.mark.parametrize("n_threads", [None, 0])
def test_none_or_zero_threads_mean_every_available_core(n_threads: int | None) -> None:
    assert kernel_threads(n_threads) == available_cores()


def test_zero_threads_follow_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arguments, "available_cores", lambda: 3)
    assert kernel_threads(0) == kernel_threads(None) == 3


@pytest.mark.parametrize("n_threads", [1, 2, 7, 64, np.int64(3)])
def test_a_positive_thread_count_is_used_as_given_without_a_cap(n_threads: int) -> None:
    assert kernel_threads(n_threads) == int(n_threads)
    assert type(kernel_threads(n_threads)) is int


def test_a_negative_thread_count_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="n_threads must be at least 0, got -1"):
        kernel_threads(-1)


@pytest.mark.parametrize("n_threads", [1.5, 2.0, "4", True])
def test_a_thread_count_that_is_not_an_integer_is_refused(n_threads: object) -> None:
    with pytest.raises(TypeError, match="n_threads must be an integer"):
        kernel_threads(n_threads)


def test_require_array_returns_the_array_itself() -> None:
    array = np.zeros((3, 4), dtype=np.float32)
    assert require_array("a", array, ndim=2, dtypes=(np.float32,), contiguous=True) is array


@pytest.mark.parametrize(
    ("value", "checks", "error", "message"),
    [
        ([1, 2], {}, TypeError, r"frame must be a numpy array, got list"),
        (
            np.zeros((2, 3, 4)),
            {"ndim": 2, "axes": "(ny, nx)"},
            ValueError,
            r"frame must be 2-D \(ny, nx\), got shape \(2, 3, 4\)",
        ),
        (np.zeros(5), {"ndim": (2, 3)}, ValueError, r"frame must be 2-D or 3-D, got shape \(5,\)"),
        (
            np.zeros(3, np.int16),
            {"dtypes": (np.uint16, np.float32)},
            ValueError,
            r"frame must be of dtype uint16 or float32, got int16",
        ),
        (
            np.zeros(3, ">f4"),
            {"dtypes": (np.float32,)},
            ValueError,
            r"frame must be of dtype float32, got >f4 \(float32 in non-native byte order\)",
        ),
        (
            np.zeros(3, np.complex64),
            {"kinds": REAL_KINDS},
            ValueError,
            r"frame must be of dtype signed integer, unsigned integer or floating point, "
            r"got complex64",
        ),
        (
            np.zeros((4, 4))[:, ::2],
            {"contiguous": True},
            ValueError,
            r"frame must be C-contiguous \(np.ascontiguousarray\), got a strided float64 array "
            r"of shape \(4, 2\)",
        ),
    ],
)
def test_require_array_names_the_argument_and_what_was_expected(
    value: object, checks: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        require_array("frame", value, **checks)


def test_require_shape_names_both_shapes_and_their_source() -> None:
    require_shape("flat", np.zeros((4, 5)), (4, 5), source="the projections' (row, column)")
    with pytest.raises(
        ValueError,
        match=r"flat shape \(5, 4\) differs from the projections' \(row, column\) shape \(4, 5\)",
    ):
        require_shape("flat", np.zeros((5, 4)), (4, 5), source="the projections' (row, column)")


def test_require_same_shape_compares_every_array_with_the_first() -> None:
    assert require_same_shape(image=np.zeros((2, 3)), mask=np.zeros((2, 3))) == (2, 3)
    with pytest.raises(ValueError, match=r"out shape \(3, 2\) differs from image shape \(2, 3\)"):
        require_same_shape(image=np.zeros((2, 3)), mask=np.zeros((2, 3)), out=np.zeros((3, 2)))


def test_require_integer_takes_numpy_integers_and_refuses_bools_and_floats() -> None:
    assert require_integer("factor", np.int32(3), minimum=1) == 3
    with pytest.raises(ValueError, match="factor must be at least 1, got 0"):
        require_integer("factor", 0, minimum=1)
    for value in (True, 2.0):
        with pytest.raises(TypeError, match="factor must be an integer"):
            require_integer("factor", value)


def test_require_number_wants_a_finite_real_within_its_bounds() -> None:
    assert require_number("dose", np.float32(1.5), at_least=0.0) == 1.5
    with pytest.raises(ValueError, match="dose must be finite, got inf"):
        require_number("dose", float("inf"))
    with pytest.raises(ValueError, match="pixel_size must be greater than 0.0, got 0.0"):
        require_number("pixel_size", 0.0, above=0.0)
    with pytest.raises(ValueError, match="dose must be at least 0.0, got -1.0"):
        require_number("dose", -1, at_least=0.0)
    for value in (1j, "1", None, False):
        with pytest.raises(TypeError, match="dose must be a real number"):
            require_number("dose", value)


def _rejected_arguments() -> list[Any]:
    """Every face's table of bad arguments (REJECTED_ARGUMENTS in its test module)."""
    cases = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        module = importlib.import_module(f"tests.kernels.{path.stem}")
        for index, (call, message) in enumerate(getattr(module, "REJECTED_ARGUMENTS", [])):
            cases.append(pytest.param(call, message, id=f"{path.stem[5:]}-{index}"))
    return cases


@pytest.mark.parametrize(("call", "message"), _rejected_arguments())
def test_every_face_checks_and_names_each_argument(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call()
