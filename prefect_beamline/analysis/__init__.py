"""Pure scientific functions the flows compose: no I/O, no Prefect."""
