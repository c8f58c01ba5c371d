"""What the runner's forkserver does once for every flow-run process
(prefect_beamline/warm_process.py): Prefect's API clients share TLS contexts."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import certifi

from prefect_beamline.warm_process import _SharedTLSContexts


def test_one_context_per_ca_file_until_the_file_is_replaced(tmp_path: Path) -> None:
    shared = _SharedTLSContexts()
    ca_file = tmp_path / "ca.pem"
    shutil.copy(certifi.where(), ca_file)
    first = shared.create_default_context(cafile=str(ca_file))
    assert shared.create_default_context(cafile=str(ca_file)) is first
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    # Without arguments (Prefect's skip-verify path, which then turns verification off)
    # is another context: the verified one is never the one Prefect loosens.
    assert shared.create_default_context() is not first
    stat = ca_file.stat()
    os.utime(ca_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    renewed = shared.create_default_context(cafile=str(ca_file))
    assert renewed is not first
    assert shared.create_default_context(cafile=str(ca_file)) is renewed


def test_prefects_clients_get_the_shared_context_after_warming() -> None:
    script = (
        "import prefect_beamline.warm_process\n"
        "from prefect.client.orchestration import get_client\n"
        "a = get_client(sync_client=True)\n"
        "b = get_client(sync_client=True)\n"
        "pool = lambda c: c._client._transport._pool._ssl_context\n"
        "print(pool(a) is pool(b))\n"
    )
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.stdout.strip() == "True", done.stdout + done.stderr
