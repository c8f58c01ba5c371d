"""Point the session stack's Compute block somewhere else for one test, and back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_beamline.blocks.compute import Compute
from prefect_beamline.stack import LocalStack
from tests.conftest import E2E_COMPUTE_BLOCK


def save_compute_block(stack: LocalStack, compute: Compute) -> None:
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        compute.save(E2E_COMPUTE_BLOCK, overwrite=True)


@contextmanager
def stack_computes_on(stack: LocalStack, compute: Compute) -> Iterator[None]:
    """The stack's flows compute where `compute` says (server-side configuration, as an
    operator edits it), then on local threads again."""
    save_compute_block(stack, compute)
    try:
        yield
    finally:
        save_compute_block(stack, Compute())


@contextmanager
def stack_compute_block_missing(stack: LocalStack) -> Iterator[None]:
    """The block PREFECT_BEAMLINE_COMPUTE_BLOCK names is gone (an operator deleted or
    misnamed it), then back on local threads."""
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        Compute.delete(E2E_COMPUTE_BLOCK)
    try:
        yield
    finally:
        save_compute_block(stack, Compute())
