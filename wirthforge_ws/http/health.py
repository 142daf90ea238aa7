"""``GET /health``: one JSON document of what the running server is doing (docs/HEALTH.md describes each field)."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    from ..connection.connection import Connection
    from ..connection.uvicorn_protocols import Admission
    from ..energy.tiers import TierChoice
    from .app import Server


def health_report(server: Server) -> dict[str, Any]:
    """The health document, read from the server's parts at the moment of the request."""
    stats = server.hub.stats
    wire = server.wire_stats
    status, problems, tasks = server.supervisor.health()
    return {
        "status": status,
        "problems": problems,
        "tasks": tasks,
        "version": __version__,
        "epoch": server.hub.epoch,
        "uptimeSeconds": round(time.monotonic() - server.started, 3),
        "tier": tier_info(server.tier),
        "connections": {
            "count": len(server.connections),
            "byProtocol": dict(Counter(c.version for c in server.connections)),
            "clients": [client_info(c) for c in server.connections],
            "handshakeTimeouts": wire.handshake_timeouts,
            "refusedOverCapacity": wire.refused_over_capacity,
            "inboundThrottled": wire.throttled,
            "admission": admission_info(wire.admission),
        },
        "frameLoop": server.frame_loop.health(),
        "gc": server.collector.health() if server.collector is not None else {"fullCollections": "automatic"},
        "messages": {
            "published": dict(stats.published),
            "validationFailures": stats.validation_failures,
            "coalesced": dict(stats.coalesced),
            "dropped": dict(stats.dropped),
            "connectionsClosed": dict(stats.closed),
            "connectionsClosedByCode": wire.closes(),
        },
        "refusedRequests": server.guard.refused if server.guard else 0,
        "persistence": server.event_log.status() if server.event_log is not None else {"status": "disabled"},
        "replay": server.replayer.health(),
    }


def admission_info(admission: Admission | None) -> dict[str, Any] | None:
    """How new connections were paced (uvicorn_protocols.Admission); None when every one starts at once."""
    if admission is None:
        return None
    return {
        "perFrame": admission.per_slot,
        "waiting": admission.waiting,
        "queued": admission.queued,
        "longestWaitMs": round(admission.longest_wait * 1000, 1),
    }


def client_info(connection: Connection) -> dict[str, Any]:
    """One entry of ``connections.clients``: what one connection is doing."""
    rtt = connection.rtt.summary(scale=1000.0)
    last_rtt = connection.rtt.last()
    pacer = connection.pacer
    return {
        "id": connection.id,
        "protocol": connection.version,
        "connectedSeconds": round(time.monotonic() - connection.connected_at, 1),
        "rttMs": {"last": None if last_rtt is None else round(last_rtt * 1000, 3), "p50": rtt["p50"]},
        "state": connection.state.value,
        "queued": len(connection.outbox),
        "directWrites": connection.direct_writes,
        "replaying": connection.outbox.feeding,
        "pacedEnergyRateHz": round(min(connection.energy_rate, pacer.effective_rate), 3),
        "energyRateCuts": pacer.reductions,
        "subscriptions": sorted(connection.subscriptions),
        "energyRateHz": connection.energy_rate,
        "energyPaused": connection.energy_paused,
    }


def tier_info(choice: TierChoice) -> dict[str, Any]:
    """``tier``: the tier in force, whether it was detected or set, why, and what it sets."""
    return {
        "name": choice.tier,
        "detected": choice.detected,
        "reason": choice.reason,
        "profile": choice.profile.name,
        "councilLimit": choice.council_limit,
    }
