"""WIRTHFORGE real-time transport: a 60 Hz WebSocket push server.

Layout (one subpackage per layer; data flows top to bottom):

- :mod:`.settings`    every tunable, with defaults, env vars and CLI flags
- :mod:`.protocol`    the contract, no I/O: codes, message builders, schema validation
- :mod:`.sources`     where tokens come from: simulated, live models, replay; model backends
- :mod:`.energy`      energy math (WF-FND-002)
- :mod:`.stream`      the 60 Hz frame loop and clock, the hub's fan-out and resume history
- :mod:`.connection`  one client: state, outbox, pacing, socket writes, inbound limits
- :mod:`.storage`     the durable event log
- :mod:`.http`        FastAPI wiring: routes, lifespan, health, metrics
- :mod:`.client`      asyncio client with reconnect and resume
"""

__version__ = "1.1.0"
