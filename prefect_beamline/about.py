"""What `prefect-beamline --version` reports: the installed distribution's version and,
when known, the commit it was built from (recorded in the wheel by setup.py, or asked of
git when running from a checkout)."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "prefect-beamline"
# Written into the wheel by setup.py's build step; absent in a checkout.
COMMIT_FILE = Path(__file__).resolve().parent / "COMMIT"


def checkout_commit(folder: Path) -> str | None:
    """`git describe` of the checkout whose top is `folder`, or None if it is not one."""
    if not (folder / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def build_commit() -> str | None:
    """The commit this package was built from, if anything recorded it."""
    if COMMIT_FILE.is_file():
        return COMMIT_FILE.read_text().strip() or None
    return checkout_commit(COMMIT_FILE.parent.parent)


def version_text() -> str:
    """`prefect-beamline 0.1.0 (commit 42b8d7b9c0de)`."""
    text = f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}"
    commit = build_commit()
    return f"{text} (commit {commit})" if commit else text
