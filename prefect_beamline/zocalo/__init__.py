"""Zocalo at a facility: the bridge that consumes `processing_recipe` from RabbitMQ, the
recipe routing table, and X-ray-centring results published the way dodal reads them.

Uses python-workflows' PikaTransport (the `zocalo` extra: `pip install
prefect-beamline[zocalo]`); docs/zocalo.md says how to connect a beamline.
"""
