"""The live path: frames analysed while the detector runs (docs/live.md).

Three inputs (a DECTRIS Stream V2 consumer, a SWMR file watcher, `images_ready` events)
feed one `LiveSession` per collection, which analyses each frame on warm worker threads
and sends every result to the LIMS and the gateway's results stream as it is ready.
"""
