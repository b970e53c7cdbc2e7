"""Typed gate configuration, built once at load.

`parse_config(raw, env, base_dir)` is pure: it turns the `cost_routing:` mapping into
frozen dataclasses, replacing `${VAR}` / `${VAR:-default}` from `env`, and raises
`ConfigError` listing every problem with its YAML path. `load_config(path, env)` reads
the file with `YAML(typ="safe")` and calls it.

Interpolation happens only in the values the gate reads, so an unset variable is a
problem exactly where the gate would use it (never inside a disabled `console` block).
`${VAR:-default}` takes the default when VAR is unset or empty, as the shell does. A
value that comes out empty counts as absent (the field's default, or None for keys).
A field that wants a number or a bool accepts text only when it came from `${...}`.

A secret setting (the OpenRouter key, the admin token, agent keys, the console key, a
sink's DSN) may also be `{file: PATH}` or `{command: [...], timeout_seconds: N}`
(gate.config.secrets); `GateConfig.secret_sources` says where each came from, never what.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import fields as _fields
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gate.config.hosts import host_name
from gate.config.loops import read_loop_breaker
from gate.config.reader import _FAILED, _Reader
from gate.config.types import (
    BUDGET_SOURCES,
    OLD_BUDGET_SOURCES,
    PERIODS,
    AgentPolicy,
    AlertsConfig,
    ConfigError,
    ConsoleConfig,
    GateConfig,
    HoldsConfig,
    LimitsConfig,
    LoopBreakerConfig,
    OpenRouterConfig,
    PostgresSinkConfig,
    RetryConfig,
    SpendStoreConfig,
    Tier,
)

__all__ = [
    "BUDGET_SOURCES",
    "PERIODS",
    "AgentPolicy",
    "AlertsConfig",
    "ConfigError",
    "ConsoleConfig",
    "GateConfig",
    "HoldsConfig",
    "LimitsConfig",
    "OpenRouterConfig",
    "PostgresSinkConfig",
    "RetryConfig",
    "SpendStoreConfig",
    "Tier",
    "load_config",
    "parse_config",
]

_AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TIER_NAME = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,62}[\x21-\x7e])?")  # header-safe text
_MODEL_ID = re.compile(r"[^\s,]+")  # ids travel comma-separated in a response header
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_GATE_HEADERS = frozenset({"authorization", "host", "content-length", "transfer-encoding"})
_SECRET_HEADER = re.compile(r"api-key|token|secret|auth|password", re.IGNORECASE)
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,47}")  # a plain identifier: used unquoted in SQL

_TOP_KEYS = (
    "spend_log",
    "spend_log_fsync",
    "admin_token",
    "require_agent_keys",
    "allowed_hosts",
    "openrouter",
    "retry",
    "limits",
    "holds",
    "console",
    "alerts",
    "spend_store",
    "sinks",
    "agents",
    "loop_breaker",
)
_OPENROUTER_KEYS = (
    "base_url",
    "api_key",
    "timeout_seconds",
    "connect_timeout_seconds",
    "drain_timeout_seconds",
    "prices_refresh_seconds",
    "key_check_seconds",
    "headers",
    "credit_floor_usd",
)
_AGENT_KEYS = (
    "budget_total",
    "budget_spent",
    "budget_source",
    "period",
    "hard_cap",
    "api_key",
    "tiers",
    "max_concurrent",
    "loop_breaker",
    "requests_per_minute",
    "tokens_per_minute",
)
_TIER_KEYS = ("threshold", "models", "name")
_ROOT = "cost_routing"
_TOKENS, _HOLD_USD = Decimal(10**8), Decimal(10**6)  # bounds that keep holds exact
_OR = OpenRouterConfig(base_url="", api_key=None)  # field defaults


def _openrouter(r: _Reader, root: Mapping[Any, Any]) -> OpenRouterConfig:
    p = f"{_ROOT}.openrouter"
    if (m := r.mapping(root.get("openrouter"), p)) is None:
        return _OR
    r.unknown(m, p, _OPENROUTER_KEYS)
    api_key = r.secret(m, "api_key", p)
    return OpenRouterConfig(
        base_url=r.url(m, "base_url", p, required=True) or "",
        api_key=(api_key.strip() or None) if api_key else None,
        timeout_seconds=r.seconds(m, "timeout_seconds", p, _OR.timeout_seconds),
        connect_timeout_seconds=r.seconds(
            m, "connect_timeout_seconds", p, _OR.connect_timeout_seconds
        ),
        drain_timeout_seconds=r.seconds(m, "drain_timeout_seconds", p, _OR.drain_timeout_seconds),
        prices_refresh_seconds=r.seconds(
            m, "prices_refresh_seconds", p, _OR.prices_refresh_seconds
        ),
        key_check_seconds=r.seconds(m, "key_check_seconds", p, _OR.key_check_seconds),
        headers=_headers(r, r.section(m, "headers", p), f"{p}.headers"),
        credit_floor_usd=r.number(m, "credit_floor_usd", p),
    )


def _headers(r: _Reader, m: Mapping[Any, Any], p: str) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for name in m:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            r.fail(f"{p}.{name}", "must be a valid header name")
        elif name.lower() in _GATE_HEADERS:
            r.fail(f"{p}.{name}", "is set by the gate and cannot be configured")
        elif (value := _header_value(r, m, name, p)) is not None:
            if "\r" in value or "\n" in value:
                r.fail(f"{p}.{name}", "must be a single line")
            out[name] = value
    return MappingProxyType(out)


def _header_value(r: _Reader, m: Mapping[Any, Any], name: str, p: str) -> str | None:
    """A credential header (x-portkey-api-key, ...) is a secret: it may come from a file
    or a command and is scrubbed like the gate's own keys; other headers are text."""
    if isinstance(m.get(name), Mapping) or _SECRET_HEADER.search(name):
        return r.secret(m, name, p)
    return r.text(m, name, p)


def _console(r: _Reader, root: Mapping[Any, Any]) -> ConsoleConfig:
    p, d = f"{_ROOT}.console", ConsoleConfig()
    m = r.section(root, "console", _ROOT)
    if not r.flag(m, "enabled", p, d.enabled):
        return d  # a disabled block is not read any further
    r.unknown(m, p, ("enabled", "url", "sync_interval_seconds", "api_key"))
    return ConsoleConfig(
        enabled=True,
        url=r.url(m, "url", p, required=True),
        sync_interval_seconds=r.seconds(m, "sync_interval_seconds", p, d.sync_interval_seconds),
        api_key=_env_secret(r, "JETPATCH_API_KEY", f"{p}.api_key", r.secret(m, "api_key", p)),
    )


def _env_secret(r: _Reader, name: str, where: str, configured: str | None) -> str | None:
    """The configured secret, else the environment variable `name` (noted as its source)."""
    if configured is not None or not r.env.get(name):
        return configured
    r.sources[where] = f"environment variable {name}"
    return r.env[name]


def _alerts(r: _Reader, m: Mapping[Any, Any], p: str) -> AlertsConfig:
    d = AlertsConfig()
    return AlertsConfig(
        webhook_url=r.url(m, "webhook_url", p, plain=False),
        format=r.choice(m, "format", p, ("slack", "discord"), d.format),
        spent_fractions=_fractions(r, m, "spent_fractions", p, d.spent_fractions),
        timeout_seconds=r.seconds(m, "timeout_seconds", p, d.timeout_seconds),
        rate_limit_storm_count=r.integer(
            m, "rate_limit_storm_count", p, d.rate_limit_storm_count, positive=True
        ),
        rate_limit_storm_seconds=r.seconds(
            m, "rate_limit_storm_seconds", p, d.rate_limit_storm_seconds
        ),
    )


def _fractions(
    r: _Reader, m: Mapping[Any, Any], key: str, p: str, default: tuple[Decimal, ...]
) -> tuple[Decimal, ...]:
    """A list of fractions within (0, 1], sorted, without repeats; [] turns them off."""
    items = m.get(key)
    if items is None:
        return default
    if not isinstance(items, list):
        r.fail(f"{p}.{key}", "must be a list of fractions within 0..1")
        return default
    found: set[Decimal] = set()
    for i, item in enumerate(items):
        at = f"{key}[{i}]"
        value = r.number({at: item}, at, p, high=Decimal(1))
        if value is not None and value == 0:
            r.fail(f"{p}.{key}[{i}]", "must be greater than 0")
        elif value is not None:
            found.add(value)
    return tuple(sorted(found))


def _spend_store(r: _Reader, root: Mapping[Any, Any]) -> SpendStoreConfig:
    p = f"{_ROOT}.spend_store"
    known = ("backend", "url", "key_prefix", "on_store_error", "hold_ttl_seconds")
    m = r.section(root, "spend_store", _ROOT, (*known, "refresh_seconds"))
    backend = r.choice(m, "backend", p, ("jsonl", "redis"), "jsonl")
    if backend != "redis":
        return SpendStoreConfig(backend=backend)
    return SpendStoreConfig(
        backend,
        r.url(m, "url", p, required=True, schemes=("redis", "rediss")),
        key_prefix=r.text(m, "key_prefix", p) or "execwall:",
        on_store_error=r.choice(m, "on_store_error", p, ("closed", "open"), "closed"),
        hold_ttl_seconds=r.seconds(m, "hold_ttl_seconds", p, 30.0),
        refresh_seconds=r.seconds(m, "refresh_seconds", p, 1.0),
    )


def _sinks(r: _Reader, root: Mapping[Any, Any]) -> tuple[PostgresSinkConfig, ...]:
    p = f"{_ROOT}.sinks"
    items = root.get("sinks")
    if items is None:
        return ()
    if not isinstance(items, list):
        r.fail(p, "must be a list of sinks")
        return ()
    sinks: list[PostgresSinkConfig] = []
    d = PostgresSinkConfig(dsn="")
    for i, item in enumerate(items):
        ip = f"{p}[{i}]"
        if (m := r.mapping(item, ip)) is None:
            continue
        r.unknown(m, ip, ("type", *(f.name for f in _fields(PostgresSinkConfig))))
        if r.text(m, "type", ip, required=True) not in (None, "postgres"):
            r.fail(f"{ip}.type", "must be postgres")
            continue
        if importlib.util.find_spec("asyncpg") is None:
            r.fail(f"{ip}.type", "needs asyncpg: pip install 'execwall-or-gate[postgres]'")
        dsn = r.secret(m, "dsn", ip)
        if dsn is None and not _reported(r, f"{ip}.dsn"):
            r.fail(f"{ip}.dsn", "is required")
        elif dsn is not None and not dsn.startswith(("postgresql://", "postgres://")):
            r.fail(f"{ip}.dsn", "must be a postgresql:// URL")  # the value is not repeated
        table = r.text(m, "table", ip) or d.table
        if not _TABLE.fullmatch(table) or table == "gate_sink_cursor":
            r.fail(f"{ip}.table", "must be a plain lower-case SQL name ([a-z_][a-z0-9_]*)")
        elif any(s.table == table for s in sinks):
            r.fail(f"{ip}.table", f"{table} is written by another sink already")
        sinks.append(
            PostgresSinkConfig(
                dsn=dsn or "",
                table=table,
                batch_size=r.integer(m, "batch_size", ip, d.batch_size, positive=True),
                batch_delay_seconds=r.seconds(
                    m, "batch_delay_seconds", ip, d.batch_delay_seconds, positive=False
                ),
                retry_max_seconds=r.seconds(m, "retry_max_seconds", ip, d.retry_max_seconds),
                pool_size=r.integer(m, "pool_size", ip, d.pool_size, positive=True),
                connect_timeout_seconds=r.seconds(
                    m, "connect_timeout_seconds", ip, d.connect_timeout_seconds
                ),
            )
        )
    return tuple(sinks)


def _reported(r: _Reader, where: str) -> bool:
    return any(x.startswith(f"{where}:") or x.startswith(f"{where}.") for x in r.problems)


def _allowed_hosts(r: _Reader, root: Mapping[Any, Any]) -> tuple[str, ...]:
    """`allowed_hosts: [name, ...]`: the Host names (port optional) the gate answers to
    besides loopback and its bound address, e.g. behind a reverse proxy."""
    p, items = f"{_ROOT}.allowed_hosts", root.get("allowed_hosts")
    if items is None:
        return ()
    if not isinstance(items, list):
        r.fail(p, "must be a list of host names")
        return ()
    names: list[str] = []
    for i, item in enumerate(items):
        value = r.interpolate(item, f"{p}[{i}]") if isinstance(item, str) else item
        name = host_name(value) if isinstance(value, str) else None
        if value is _FAILED:
            continue
        if name is None:
            r.fail(f"{p}[{i}]", "must be a host name, optionally with :port")
        else:
            names.append(name)
    return tuple(names)


def _agents(r: _Reader, root: Mapping[Any, Any]) -> Mapping[str, AgentPolicy]:
    p = f"{_ROOT}.agents"
    breaker = read_loop_breaker(r, root, _ROOT, LoopBreakerConfig())  # every agent's default
    m = r.mapping(root.get("agents"), p)
    if m is not None and not m:
        r.fail(p, "at least one agent is required")
    agents: dict[str, AgentPolicy] = {}
    key_owner: dict[str, str] = {}
    for agent_id, body in (m or {}).items():
        if not isinstance(agent_id, str) or not _AGENT_ID.fullmatch(agent_id):
            r.fail(f"{p}.{agent_id}", "agent id must match [A-Za-z0-9._-]{1,64}")
            continue
        if (agent := _agent(r, agent_id, body, f"{p}.{agent_id}", breaker)) is None:
            continue
        agents[agent_id] = agent
        owner = key_owner.setdefault(agent.api_key, agent_id) if agent.api_key else agent_id
        if owner != agent_id:
            r.fail(f"{p}.{agent_id}.api_key", f"must differ from agent {owner}'s")
    return MappingProxyType(agents)


def _agent(
    r: _Reader, agent_id: str, body: object, p: str, breaker: LoopBreakerConfig
) -> AgentPolicy | None:
    if not (m := r.mapping(body, p)):
        if m is not None:
            r.fail(p, "must set budget_total and tiers")
        return None
    r.unknown(m, p, _AGENT_KEYS)
    return AgentPolicy(
        agent_id=agent_id,
        budget_total=r.decimal(m, "budget_total", p, Decimal(0), required=True),
        budget_spent=r.decimal(m, "budget_spent", p, Decimal(0)),
        budget_source=_budget_source(r, m, p),
        period=r.choice(m, "period", p, PERIODS, "monthly"),
        hard_cap=r.flag(m, "hard_cap", p, True),
        tiers=_tiers(r, m, f"{p}.tiers"),
        api_key=r.secret(m, "api_key", p),
        max_concurrent=r.integer(m, "max_concurrent", p, 0, positive=True) or None,
        loop_breaker=read_loop_breaker(r, m, p, breaker),
        requests_per_minute=_per_minute(r, m, "requests_per_minute", p),
        tokens_per_minute=_per_minute(r, m, "tokens_per_minute", p),
    )


def _per_minute(r: _Reader, m: Mapping[Any, Any], key: str, p: str) -> int | None:
    """A rate limit the agent sets (0: none), or None to take `limits.`'s."""
    if key not in m:
        return None
    value = r.integer(m, key, p, 0)
    if value < 0:
        r.fail(f"{p}.{key}", "must be >= 0 (0: no limit)")
    return value


def _at_least_0(r: _Reader, m: Mapping[Any, Any], key: str, p: str) -> int:
    value = r.integer(m, key, p, getattr(LimitsConfig(), key))
    if value < 0:
        r.fail(f"{p}.{key}", "must be >= 0 (0: no limit)")
    return max(value, 0)


def _budget_source(r: _Reader, m: Mapping[Any, Any], p: str) -> str:
    value = r.text(m, "budget_source", p)
    if value in OLD_BUDGET_SOURCES:
        new = OLD_BUDGET_SOURCES[value]
        r.warn(f"{p}.budget_source", f"'{value}' is an older spelling of '{new}'; write {new}")
        return new
    if value is not None and value not in BUDGET_SOURCES:
        r.fail(f"{p}.budget_source", f"must be one of {', '.join(BUDGET_SOURCES)}")
    return value if value in BUDGET_SOURCES else "local"


def _tiers(r: _Reader, m: Mapping[Any, Any], p: str) -> tuple[Tier, ...]:
    items = m.get("tiers")
    if not isinstance(items, list) or not items:
        r.fail(p, "must be a non-empty list of tiers")
        return ()
    found: list[tuple[Decimal, str | None, tuple[str, ...]]] = []
    first_at: dict[Decimal, int] = {}
    for i, item in enumerate(items):
        ip = f"{p}[{i}]"
        if (t := r.mapping(item, ip)) is None:
            continue
        r.unknown(t, ip, _TIER_KEYS)
        threshold = r.number(t, "threshold", ip, required=True, high=Decimal(1))
        name = r.text(t, "name", ip)
        if name is not None and not _TIER_NAME.fullmatch(name):
            r.fail(f"{ip}.name", "must be 1-64 printable ASCII characters")
        models = _models(r, t.get("models"), f"{ip}.models")
        if threshold is not None and first_at.setdefault(threshold, i) != i:
            r.fail(f"{ip}.threshold", f"must be unique (tiers[{first_at[threshold]}] has it)")
        elif threshold is not None:
            found.append((threshold, name, models))
    found.sort(key=lambda tier: tier[0], reverse=True)
    n = len(found)
    defaults = ("premium", "mid", "economy") if n == 3 else [f"tier-{k + 1}" for k in range(n)]
    tiers = tuple(
        Tier(name or defaults[k], threshold, models)
        for k, (threshold, name, models) in enumerate(found)
    )
    names = [tier.name for tier in tiers]
    for dup in sorted({x for x in names if names.count(x) > 1}):
        r.fail(p, f"tier name {dup} is used twice")
    return tiers


def _models(r: _Reader, items: object, p: str) -> tuple[str, ...]:
    if not isinstance(items, list) or not items:
        r.fail(p, "must be a non-empty list of model ids")
        return ()
    models: list[str] = []
    for i, item in enumerate(items):
        value = r.interpolate(item, f"{p}[{i}]") if isinstance(item, str) else item
        if value is _FAILED:
            continue
        if not isinstance(value, str) or not _MODEL_ID.fullmatch(value):
            r.fail(f"{p}[{i}]", "must be a model id (text without spaces or commas)")
        elif value in models:
            r.fail(f"{p}[{i}]", f"repeats {value}")
        else:
            models.append(str(value))
    return tuple(models)


def parse_config(
    raw: object, env: Mapping[str, str], base_dir: Path, source: Path | None = None
) -> GateConfig:
    """Build the typed config from a whole YAML document; raise `ConfigError` listing all
    problems. Relative paths are resolved against `base_dir` (the config file's folder)."""
    if not isinstance(raw, Mapping) or raw.get(_ROOT) is None:
        raise ConfigError([f"{_ROOT}: missing"])
    r = _Reader(env, base_dir)
    root = r.mapping(raw[_ROOT], _ROOT)
    if root is None:
        raise ConfigError(r.problems)
    r.unknown(root, _ROOT, _TOP_KEYS)
    retry, limits, holds = RetryConfig(), LimitsConfig(), HoldsConfig()
    rp, lp, hp = f"{_ROOT}.retry", f"{_ROOT}.limits", f"{_ROOT}.holds"
    rm = r.section(root, "retry", _ROOT, ("max_retries", "backoff_seconds", "max_backoff_seconds"))
    lm = r.section(
        root,
        "limits",
        _ROOT,
        (
            "max_body_bytes",
            "max_json_values",
            "max_concurrent_upstream",
            "max_concurrent_per_agent",
            "client_timeout_seconds",
            "max_connections",
            "max_connections_per_client",
            "requests_per_minute",
            "tokens_per_minute",
            "free_requests_per_minute",
        ),
    )
    hm = r.section(
        root,
        "holds",
        _ROOT,
        (
            "default_max_tokens",
            "unknown_model_usd_per_token",
            "plugin_usd_per_request",
            "max_tokens_ceiling",
            "max_hold_usd",
        ),
    )
    am = r.section(root, "alerts", _ROOT)  # may carry keys for other tools: not checked
    admin_token = _env_secret(r, "GATE_ADMIN_TOKEN", f"{_ROOT}.admin_token", None) or r.secret(
        root, "admin_token", _ROOT
    )
    config = GateConfig(
        spend_log=Path(
            os.path.normpath(base_dir / (r.text(root, "spend_log", _ROOT) or "spend.jsonl"))
        ),
        spend_log_fsync=r.flag(root, "spend_log_fsync", _ROOT, False),
        admin_token=admin_token,
        openrouter=_openrouter(r, root),
        retry=RetryConfig(
            max_retries=r.integer(rm, "max_retries", rp, retry.max_retries),
            backoff_seconds=r.seconds(
                rm, "backoff_seconds", rp, retry.backoff_seconds, positive=False
            ),
            max_backoff_seconds=r.seconds(
                rm, "max_backoff_seconds", rp, retry.max_backoff_seconds, positive=False
            ),
        ),
        limits=LimitsConfig(
            max_body_bytes=r.integer(
                lm, "max_body_bytes", lp, limits.max_body_bytes, positive=True
            ),
            max_json_values=r.integer(
                lm, "max_json_values", lp, limits.max_json_values, positive=True
            ),
            max_concurrent_upstream=r.integer(
                lm, "max_concurrent_upstream", lp, limits.max_concurrent_upstream, positive=True
            ),
            max_concurrent_per_agent=r.integer(
                lm, "max_concurrent_per_agent", lp, limits.max_concurrent_per_agent, positive=True
            ),
            client_timeout_seconds=r.seconds(
                lm, "client_timeout_seconds", lp, limits.client_timeout_seconds
            ),
            max_connections=r.integer(
                lm, "max_connections", lp, limits.max_connections, positive=True
            ),
            max_connections_per_client=r.integer(
                lm, "max_connections_per_client", lp, limits.max_connections_per_client,
                positive=True,
            ),
            requests_per_minute=_at_least_0(r, lm, "requests_per_minute", lp),
            tokens_per_minute=_at_least_0(r, lm, "tokens_per_minute", lp),
            free_requests_per_minute=_at_least_0(r, lm, "free_requests_per_minute", lp),
        ),
        require_agent_keys=r.flag(root, "require_agent_keys", _ROOT, False),
        allowed_hosts=_allowed_hosts(r, root),
        holds=HoldsConfig(
            default_max_tokens=r.integer(
                hm, "default_max_tokens", hp, holds.default_max_tokens, positive=True
            ),
            unknown_model_usd_per_token=r.decimal(
                hm, "unknown_model_usd_per_token", hp, holds.unknown_model_usd_per_token
            ),
            plugin_usd_per_request=r.decimal(
                hm, "plugin_usd_per_request", hp, holds.plugin_usd_per_request
            ),
            max_tokens_ceiling=int(
                r.number(hm, "max_tokens_ceiling", hp, positive=True, whole=True, high=_TOKENS)
                or holds.max_tokens_ceiling
            ),
            max_hold_usd=r.number(hm, "max_hold_usd", hp, positive=True, high=_HOLD_USD)
            or holds.max_hold_usd,
        ),
        console=_console(r, root),
        alerts=_alerts(r, am, f"{_ROOT}.alerts"),
        spend_store=_spend_store(r, root),
        sinks=_sinks(r, root),
        agents=_agents(r, root),
        source=source,
        secret_sources=MappingProxyType(r.sources),
        warnings=tuple(r.warnings),
    )
    if config.openrouter.api_key is None and not any(
        x.startswith(f"{_ROOT}.openrouter.api_key:") for x in r.problems
    ):  # pass-through would hand an agent's gate key to OpenRouter
        for agent in config.agents.values():
            if agent.api_key:
                r.fail(
                    f"{_ROOT}.agents.{agent.agent_id}.api_key",
                    "needs cost_routing.openrouter.api_key (pass-through sends the "
                    "client's Authorization upstream)",
                )
    if config.require_agent_keys:
        for agent in config.agents.values():
            where = f"{_ROOT}.agents.{agent.agent_id}.api_key"
            if not agent.api_key and not any(x.startswith(where + ":") for x in r.problems):
                r.fail(where, "is required (require_agent_keys is true)")
    if r.problems:
        raise ConfigError(r.problems)
    return config


def load_config(path: Path, env: Mapping[str, str]) -> GateConfig:
    """Read a YAML config file (plain data only) and parse it; every failure is a
    `ConfigError` whose lines name the file or the YAML path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: cannot read config: not UTF-8 text"]) from None
    try:
        raw = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise ConfigError([_yaml_problem(path, exc)]) from None
    return parse_config(raw, env, path.absolute().parent, source=path.absolute())


def _yaml_problem(path: Path, exc: YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    what = getattr(exc, "problem", None) or str(exc)
    return f"{where}: invalid YAML: {' '.join(str(what).split())}"
