"""Per-process set-up that every served flow run would otherwise repeat, done once.

`serve`'s forkserver imports this module last (prefect_beamline/serving.py), after the
flow modules, so each flow-run process forked from it starts with the work done. What it
saves was measured on served MX runs (py-spy, issue 17), as shares of a run's CPU:

- **LIMS mappers, ~16 %.** SQLAlchemy configures every mapper of the LIMS schema at the
  first query of a process. Configured here, the configuration is inherited.
- **TLS contexts, ~15 %.** Prefect's API clients build a new `ssl.SSLContext` from the
  CA bundle each time one is made (~20 ms each, 5-8 per run, and one per pass of the
  runner's crash-recovery loop), even for an `http://` API. `share_tls_contexts` makes
  Prefect's client module reuse one context per set of arguments (and CA file version).
  A context is built to be shared by many connections; Prefect only ever sets the same
  two fields on the one it asks for without arguments (its skip-verify setting).
"""

from __future__ import annotations

import gc
import os
import ssl
import threading
from types import ModuleType
from typing import Any

from sqlalchemy.orm import configure_mappers


class _SharedTLSContexts(ModuleType):
    """The `ssl` module as Prefect's client module sees it, with contexts reused."""

    def __init__(self) -> None:
        super().__init__("ssl")
        self._contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    def create_default_context(
        self,
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: str | bytes | None = None,
    ) -> ssl.SSLContext:
        # A CA file replaced on disk (certificates renewed) gets a new context.
        version = os.stat(cafile).st_mtime_ns if cafile else None
        key = (purpose, cafile, version, capath, cadata)
        with self._lock:
            context = self._contexts.get(key)
            if context is None:
                context = ssl.create_default_context(
                    purpose, cafile=cafile, capath=capath, cadata=cadata
                )
                self._contexts[key] = context
            return context


def share_tls_contexts() -> None:
    """Make Prefect's API clients in this process share their TLS contexts: the HTTP
    clients, the server-version check and the events websocket."""
    import prefect._internal.version_checking as version_checking
    import prefect._internal.websockets as websockets
    import prefect.client.orchestration as orchestration

    shared = _SharedTLSContexts()
    for module in (orchestration, version_checking, websockets):
        if not isinstance(module.ssl, _SharedTLSContexts):
            module.ssl = shared  # type: ignore[attr-defined]


def warm() -> None:
    """What a flow-run process needs before its first API call and LIMS query."""
    import prefect_beamline.lims.schema  # noqa: F401  (the core tables; techniques' via flows)
    from prefect_beamline.settings import get_settings

    configure_mappers()
    share_tls_contexts()
    get_settings()
    # Last: what the forkserver holds now is never collected again, so a child's garbage
    # collections do not walk (and copy on write) the parent's million objects.
    gc.collect()
    gc.freeze()


warm()
