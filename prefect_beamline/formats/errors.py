"""The error every reader raises for a missing, truncated or inconsistent data file.

It is a ValueError, so flows treat it as bad input: the task fails at once (no retry)
with a message that names the file and the field, instead of retrying a broken file.
"""

from __future__ import annotations


class DataFileError(ValueError):
    """A data file that cannot be read as its format says; the message names it."""
