"""Prometheus metrics, in a registry of the app's own (no global registry)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

UNKNOWN = "_unknown"  # label for anything not in the config: ids never become labels


class Metrics:
    def __init__(self, agents: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.known_agents = frozenset(agents)
        self.requests = Counter(
            "gate_requests",
            "Chat completion requests by outcome",
            ["agent", "tier", "status"],
            registry=self.registry,
        )
        self.spend = Counter(
            "gate_spend_usd", "USD charged to agents", ["agent"], registry=self.registry
        )
        self.retries = Counter(
            "gate_upstream_retries", "Upstream calls retried", ["status"], registry=self.registry
        )
        self.streams = Gauge(
            "gate_streams_in_flight", "Streams being relayed now", registry=self.registry
        )
        self.latency = Histogram(
            "gate_request_duration_seconds",
            "Time from request to the end of the answer",
            ["stream"],
            registry=self.registry,
        )

    def agent(self, agent_id: str | None) -> str:
        return agent_id if agent_id in self.known_agents else UNKNOWN

    def request(
        self,
        agent_id: str | None,
        tier: str | None,
        status: int,
        cost: Decimal,
        seconds: float,
        stream: bool,
    ) -> None:
        agent = self.agent(agent_id)
        self.requests.labels(agent, tier or "none", str(status)).inc()
        if cost:
            self.spend.labels(agent).inc(float(cost))
        self.latency.labels("true" if stream else "false").observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
