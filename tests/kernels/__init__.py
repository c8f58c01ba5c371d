"""Kernel tests: every `ext/` face against its plain numpy reference (`<face>_reference`)."""
