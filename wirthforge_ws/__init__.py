"""WIRTHFORGE real-time transport: a 60 Hz WebSocket push server.

Layout (one module per responsibility):

- :mod:`.settings`   every tunable, with defaults, env vars and CLI flags
- :mod:`.protocol`   protocol constants: versions, channels, close and error codes
- :mod:`.schemas`    JSON Schema loading and compiled validation
- :mod:`.messages`   builders for every outbound message type
- :mod:`.clock`      the drift-free frame clock
- :mod:`.metrics`    rolling percentiles and rate meters
- :mod:`.frame_loop` the 60 Hz loop: source -> energy_update -> hub
- :mod:`.hub`        validate once, serialise once, fan out; resume history
- :mod:`.outbox`     per-connection bounded queue with latest-wins coalescing
- :mod:`.connection` one client: handshake, writer, reader, heartbeat
- :mod:`.security`   Origin / Host checks before the upgrade
- :mod:`.sources`    token and energy sources (simulated model for now)
- :mod:`.energy`     energy math (WF-FND-002)
- :mod:`.app`        FastAPI wiring: routes, lifespan, health
- :mod:`.client`     asyncio client with reconnect and resume (subpackage)
- :mod:`.transport`  TCP-level flow control and abort below ASGI
"""

__version__ = "1.1.0"
