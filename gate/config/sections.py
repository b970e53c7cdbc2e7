"""Reading the gate-wide sections of `cost_routing`: openrouter (and its headers),
retry, limits, holds, console, alerts, spend_store, sinks and allowed_hosts
(gate.config.parse calls each with the shared `_Reader`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from gate.config.hosts import host_name
from gate.config.reader import _FAILED, _Reader
from gate.config.types import (
    AlertsConfig,
    ConsoleConfig,
    HoldsConfig,
    LimitsConfig,
    OpenRouterConfig,
    RetryConfig,
)

_ROOT = "cost_routing"

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


_GATE_HEADERS = frozenset({"authorization", "host", "content-length", "transfer-encoding"})


_SECRET_HEADER = re.compile(r"api-key|token|secret|auth|password", re.IGNORECASE)


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


_LIMITS_KEYS = (
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
)


_HOLDS_KEYS = (
    "default_max_tokens",
    "unknown_model_usd_per_token",
    "plugin_usd_per_request",
    "max_tokens_ceiling",
    "max_hold_usd",
)


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


def _at_least_0(r: _Reader, m: Mapping[Any, Any], key: str, p: str) -> int:
    value = r.integer(m, key, p, getattr(LimitsConfig(), key))
    if value < 0:
        r.fail(f"{p}.{key}", "must be >= 0 (0: no limit)")
    return max(value, 0)


def _retry(r: _Reader, root: Mapping[Any, Any]) -> RetryConfig:
    retry, rp = RetryConfig(), f"{_ROOT}.retry"
    rm = r.section(root, "retry", _ROOT, ("max_retries", "backoff_seconds", "max_backoff_seconds"))
    return RetryConfig(
        max_retries=r.integer(rm, "max_retries", rp, retry.max_retries),
        backoff_seconds=r.seconds(rm, "backoff_seconds", rp, retry.backoff_seconds, positive=False),
        max_backoff_seconds=r.seconds(
            rm, "max_backoff_seconds", rp, retry.max_backoff_seconds, positive=False
        ),
    )


def _limits(r: _Reader, root: Mapping[Any, Any]) -> LimitsConfig:
    limits, lp = LimitsConfig(), f"{_ROOT}.limits"
    lm = r.section(root, "limits", _ROOT, _LIMITS_KEYS)
    return LimitsConfig(
        max_body_bytes=r.integer(lm, "max_body_bytes", lp, limits.max_body_bytes, positive=True),
        max_json_values=r.integer(lm, "max_json_values", lp, limits.max_json_values, positive=True),
        max_concurrent_upstream=r.integer(
            lm, "max_concurrent_upstream", lp, limits.max_concurrent_upstream, positive=True
        ),
        max_concurrent_per_agent=r.integer(
            lm, "max_concurrent_per_agent", lp, limits.max_concurrent_per_agent, positive=True
        ),
        client_timeout_seconds=r.seconds(
            lm, "client_timeout_seconds", lp, limits.client_timeout_seconds
        ),
        max_connections=r.integer(lm, "max_connections", lp, limits.max_connections, positive=True),
        max_connections_per_client=r.integer(
            lm,
            "max_connections_per_client",
            lp,
            limits.max_connections_per_client,
            positive=True,
        ),
        requests_per_minute=_at_least_0(r, lm, "requests_per_minute", lp),
        tokens_per_minute=_at_least_0(r, lm, "tokens_per_minute", lp),
        free_requests_per_minute=_at_least_0(r, lm, "free_requests_per_minute", lp),
    )


def _holds(r: _Reader, root: Mapping[Any, Any]) -> HoldsConfig:
    holds, hp = HoldsConfig(), f"{_ROOT}.holds"
    hm = r.section(root, "holds", _ROOT, _HOLDS_KEYS)
    return HoldsConfig(
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
    )
