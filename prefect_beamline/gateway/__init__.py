"""The DAQ gateway: HTTP announcements in, a durable outbox, Prefect events out.

`server` builds and runs the app; `app` is the HTTP API, `auth` its authentication,
`mapping` turns Zocalo and Bluesky messages into collection events, `outbox` stores them
and `emitter` drains them to Prefect in order.
"""
