"""The gate's typed configuration: frozen dataclasses, built once at load by
`gate.config.parse_config` and passed in; nothing here reads files or the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

PERIODS = ("daily", "weekly", "monthly", "never")
# `local`: the budget is kept here (the founding document's word); `jetpatch`: the
# console sets it. `config` is an older spelling of `local`, still read (with a warning).
BUDGET_SOURCES = ("local", "jetpatch")
OLD_BUDGET_SOURCES = {"config": "local"}


class ConfigError(Exception):
    """Every problem in a config, one line each, each naming its YAML path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    threshold: Decimal
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoopBreakerConfig:
    """`loop_breaker:` (every agent's default) or `agents.<id>.loop_breaker:`; a rule
    set to 0 is off, `loop_breaker: false` turns both off (`gate.core.loops`)."""

    same_request_max: int = 5  # the same request (messages + tools) this often ...
    same_request_window_seconds: float = 60.0  # ... within this window; one more: 429
    no_new_turn_max_per_minute: int = 60  # requests a minute with the last user turn unchanged

    @property
    def on(self) -> bool:
        return self.same_request_max > 0 or self.no_new_turn_max_per_minute > 0


LOOP_BREAKER_OFF = LoopBreakerConfig(0, 60.0, 0)


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    agent_id: str
    budget_total: Decimal
    budget_spent: Decimal
    budget_source: str
    period: str
    hard_cap: bool
    tiers: tuple[Tier, ...]  # sorted by threshold, highest first
    api_key: str | None = field(default=None, repr=False)
    max_concurrent: int | None = None  # calls in flight; None: limits.max_concurrent_per_agent
    loop_breaker: LoopBreakerConfig = field(default_factory=LoopBreakerConfig)
    requests_per_minute: int | None = None  # None: limits.requests_per_minute; 0: none
    tokens_per_minute: int | None = None  # None: limits.tokens_per_minute; 0: none


@dataclass(frozen=True, slots=True)
class OpenRouterConfig:
    base_url: str  # no trailing slash, e.g. https://openrouter.ai/api/v1
    api_key: str | None = field(repr=False)  # None: pass the client's Authorization through
    timeout_seconds: float = 120.0  # idle time allowed between upstream reads
    connect_timeout_seconds: float = 10.0
    drain_timeout_seconds: float = 30.0  # reading on after the client left, for the usage
    prices_refresh_seconds: float = 3600.0
    key_check_seconds: float = 300.0  # how often GET /key confirms the key is still valid
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold keys
    credit_floor_usd: Decimal | None = None  # /api/health warns below this credit left


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_retries: int = 3
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_values: int = 100_000  # in one body: beyond, 413 (checked off the event loop)
    max_concurrent_upstream: int = 1024  # calls in flight upstream (Envoy's default); beyond: 503
    max_concurrent_per_agent: int = 64  # one agent's share of them; beyond: 429 + Retry-After
    client_timeout_seconds: float = 30.0  # a body read or one write to a client may stall this long
    # open client connections, in total and per client address; the excess is closed
    # when accepted (the total never exceeds half the open-files limit, `gate.http.conns`)
    max_connections: int = 4096
    max_connections_per_client: int = 1024
    requests_per_minute: int = 0  # per agent, unless the agent sets its own; 0: no limit
    tokens_per_minute: int = 0  # per agent (estimated at admission, settled from usage)
    free_requests_per_minute: int = 20  # to `:free` models, all agents together (OpenRouter's)


MAX_TOKENS_CEILING = 2_000_000  # no model's context is larger today


@dataclass(frozen=True, slots=True)
class HoldsConfig:
    default_max_tokens: int = 4096
    unknown_model_usd_per_token: Decimal = Decimal("0.00005")
    # held on top of tokens for a request using plugins / web search (billed per request;
    # OpenRouter's web plugin: 5 results at $4 per 1000)
    plugin_usd_per_request: Decimal = Decimal("0.02")
    # the most a body may name in `max_tokens`, `max_completion_tokens`, `reasoning.max_tokens`
    # (the models' context lengths from /models bound the hold further)
    max_tokens_ceiling: int = MAX_TOKENS_CEILING
    # the largest hold one request may place: a body that could cost more is limited
    # (max_tokens lowered) or refused. Keeps every sum exact and, on Redis, far inside
    # signed 64-bit pico-USD (about 9.2 million USD)
    max_hold_usd: Decimal = Decimal(1000)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    enabled: bool = False
    url: str | None = None
    sync_interval_seconds: float = 60.0
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    webhook_url: str | None = field(default=None, repr=False)  # Slack's carries a token
    format: str = "slack"  # slack | discord: the webhook body's shape
    spent_fractions: tuple[Decimal, ...] = (Decimal("0.5"), Decimal("0.8"))  # ascending
    timeout_seconds: float = 5.0  # one webhook POST
    rate_limit_storm_count: int = 10  # this many upstream 429s ...
    rate_limit_storm_seconds: float = 60.0  # ... within this many seconds: one alert


@dataclass(frozen=True, slots=True)
class SpendStoreConfig:
    backend: str = "jsonl"
    url: str | None = field(default=None, repr=False)  # may hold a password
    key_prefix: str = "execwall:"  # redis: every key the gate uses starts with it
    on_store_error: str = "closed"  # redis unreachable: "closed" refuses, "open" admits
    hold_ttl_seconds: float = 30.0  # a hold not renewed this long is a dead instance's
    refresh_seconds: float = 1.0  # how often the local view is read back from Redis


@dataclass(frozen=True, slots=True)
class PostgresSinkConfig:
    """`sinks: [{type: postgres, ...}]`: request lines copied into a Postgres table."""

    dsn: str = field(repr=False)  # may hold a password
    table: str = "tool_calls"
    batch_size: int = 500  # request lines per INSERT at most
    batch_delay_seconds: float = 0.2  # lines gathered this long after a write, per batch
    retry_max_seconds: float = 30.0  # backoff ceiling while Postgres is away
    pool_size: int = 2
    connect_timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class GateConfig:
    spend_log: Path
    openrouter: OpenRouterConfig
    agents: Mapping[str, AgentPolicy]
    admin_token: str | None = field(default=None, repr=False)
    require_agent_keys: bool = False  # every agent must have (and send) an api_key
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides loopback and the bound host
    spend_log_fsync: bool = False
    retry: RetryConfig = field(default_factory=RetryConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    holds: HoldsConfig = field(default_factory=HoldsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    spend_store: SpendStoreConfig = field(default_factory=SpendStoreConfig)
    sinks: tuple[PostgresSinkConfig, ...] = ()
    source: Path | None = None  # the file it was read from, for /api/reload
    # YAML path of each secret set -> where it came from ("file ...", "command op", ...)
    secret_sources: Mapping[str, str] = field(default_factory=dict)
    # accepted but deprecated spellings, one line each naming its YAML path
    warnings: tuple[str, ...] = ()
