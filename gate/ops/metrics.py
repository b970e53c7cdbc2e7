"""Prometheus metrics, in a registry of the app's own (no global registry).

Counters and histograms are updated where things happen (one increment or observation
each); budget gauges and the spend log's counters are read from the ledger when
Prometheus scrapes, so the hot path never pays for them. Labels are bounded: an agent
id or a model that is not in the config never becomes a label value.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gate.config import AgentPolicy
from gate.core.jsonfmt import finite_float

if TYPE_CHECKING:
    from gate.books.store import SpendStore

UNKNOWN = "_unknown"  # label for an agent not in the config: ids never become labels
OTHER_MODEL = "_other"  # label for a model not in any configured tier
NO_MODEL = "none"  # no model answered (refused, failed before upstream named one)
# LLM answers take seconds to minutes: buckets for that range.
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self, agents: Mapping[str, AgentPolicy]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.known_agents: frozenset[str] = frozenset()
        self.known_models: frozenset[str] = frozenset()
        self.configure(agents)
        self.requests = Counter(
            "gate_requests",
            "Inference requests by API and outcome",
            ["api", "agent", "tier", "model", "status"],
            registry=self.registry,
        )
        self.spend = Counter(
            "gate_spend_usd", "USD charged to agents", ["agent", "model"], registry=self.registry
        )
        self.retries = Counter(
            "gate_upstream_retries", "Upstream calls retried", ["status"], registry=self.registry
        )
        self.upstream_responses = Counter(
            "gate_upstream_responses",
            "Upstream chat answers by HTTP status, every attempt",
            ["status"],
            registry=self.registry,
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
        self.upstream_latency = Histogram(
            "gate_upstream_latency_seconds",
            "Time from sending a chat request upstream to its response headers, per attempt",
            registry=self.registry,
            buckets=SLOW_BUCKETS,
        )
        # Labelled children looked up once: label values are bounded (configured agents
        # and models, else "unknown"/"other"), so these stay small.
        self._children: dict[tuple[str, str, str, str, int], Counter] = {}
        self._answers: dict[int, Counter] = {}
        self._spend: dict[tuple[str, str], Counter] = {}
        self._stream_latency = self.latency.labels("true")
        self._json_latency = self.latency.labels("false")
        self.first_chunk = Histogram(
            "gate_time_to_first_chunk_seconds",
            "Time from a streaming request to the first data event from upstream",
            registry=self.registry,
            buckets=SLOW_BUCKETS,
        )

    def configure(self, agents: Mapping[str, AgentPolicy]) -> None:
        """The label sets allowed: the configured agents and their tiers' models."""
        self.known_agents = frozenset(agents)
        self.known_models = frozenset(
            model for policy in agents.values() for tier in policy.tiers for model in tier.models
        )

    def agent(self, agent_id: str | None) -> str:
        return agent_id if agent_id in self.known_agents else UNKNOWN

    def model(self, model: str | None) -> str:
        if model is None:
            return NO_MODEL
        return model if model in self.known_models else OTHER_MODEL

    def request(
        self,
        agent_id: str | None,
        tier: str | None,
        status: int,
        cost: Decimal,
        seconds: float,
        stream: bool,
        model: str | None = None,
        api: str = "chat",
    ) -> None:
        agent, model_label = self.agent(agent_id), self.model(model)
        labels = (api, agent, tier or "none", model_label, status)
        counter = self._children.get(labels)
        if counter is None:  # prometheus_client's labels() takes a lock and checks: once
            counter = self._children[labels] = self.requests.labels(*labels[:4], str(status))
        counter.inc()
        if cost:
            spend = self._spend.get((agent, model_label))
            if spend is None:
                spend = self._spend[agent, model_label] = self.spend.labels(agent, model_label)
            spend.inc(finite_float(cost) or 0.0)
        (self._stream_latency if stream else self._json_latency).observe(seconds)

    def upstream_answer(self, status: int, seconds: float) -> None:
        counter = self._answers.get(status)
        if counter is None:
            counter = self._answers[status] = self.upstream_responses.labels(str(status))
        counter.inc()
        self.upstream_latency.observe(seconds)

    def track_ledger(self, ledger: SpendStore) -> None:
        """Budget gauges and spend-log counters, read from the ledger at each scrape."""
        self.registry.register(_LedgerCollector(ledger))

    def render(self) -> bytes:
        return generate_latest(self.registry)


_GAUGES = (
    ("gate_budget_total_usd", "Budget of the current period", "budget_total"),
    ("gate_budget_spent_usd", "Spent in the current period", "budget_spent"),
    ("gate_budget_remaining_usd", "budget_total - budget_spent", "budget_remaining"),
    (
        "gate_budget_remaining_fraction",
        "(budget_total - spent - held) / budget_total, what routing uses",
        "remaining_fraction",
    ),
    ("gate_budget_held_usd", "Held by requests in flight", "budget_held"),
)


class _LedgerCollector(Collector):
    def __init__(self, ledger: SpendStore) -> None:
        self._ledger = ledger

    def describe(self) -> Iterator[Metric]:
        return self._families(read=False)

    def collect(self) -> Iterator[Metric]:
        return self._families(read=True)

    def _families(self, *, read: bool) -> Iterator[Metric]:
        ledger = self._ledger
        views = [ledger.view(agent_id) for agent_id in ledger.agent_ids()] if read else []
        for name, doc, key in _GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["agent"])
            for view in views:
                if view is not None:
                    family.add_metric([view["agent_id"]], finite_float(view[key]) or 0.0)
            yield family
        spend_log = ledger.spend_log
        yield CounterMetricFamily(
            "gate_spend_log_write_failures",
            "Spend-log writes that failed (each retry counts)",
            value=spend_log.write_failures if read else None,
        )
        yield CounterMetricFamily(
            "gate_spend_log_lines",
            "Lines written to the spend log",
            value=spend_log.lines_written if read else None,
        )
        yield GaugeMetricFamily(
            "gate_spend_log_writable",
            "1 while the spend log can be written, 0 while it fails",
            value=(0 if spend_log.error is not None else 1) if read else None,
        )
