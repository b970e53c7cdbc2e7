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
(gate.secrets); `GateConfig.secret_sources` says where each came from, never what.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import fields as _fields
from decimal import Decimal, InvalidOperation
from difflib import get_close_matches
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .secrets import DEFAULT_COMMAND_TIMEOUT, SecretError, read_secret_file, run_secret_command

PERIODS = ("daily", "weekly", "monthly", "never")
BUDGET_SOURCES = ("config", "jetpatch")


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
class AgentPolicy:
    agent_id: str
    budget_total: Decimal
    budget_spent: Decimal
    budget_source: str
    period: str
    hard_cap: bool
    tiers: tuple[Tier, ...]  # sorted by threshold, highest first
    api_key: str | None = field(default=None, repr=False)


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
    max_concurrent_upstream: int = 256  # calls in flight upstream; beyond: 503 + Retry-After
    client_timeout_seconds: float = 30.0  # a body read or one write to a client may stall this long


@dataclass(frozen=True, slots=True)
class HoldsConfig:
    default_max_tokens: int = 4096
    unknown_model_usd_per_token: Decimal = Decimal("0.00005")


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


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")
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
    "openrouter",
    "retry",
    "limits",
    "holds",
    "console",
    "alerts",
    "spend_store",
    "sinks",
    "agents",
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
)
_TIER_KEYS = ("threshold", "models", "name")
_ROOT = "cost_routing"
_OR = OpenRouterConfig(base_url="", api_key=None)  # field defaults
_ABSENT = object()  # missing, null or empty
_FAILED = object()  # already reported (an unset ${VAR})


class _EnvText(str):
    """Text produced by `${...}` interpolation; number and bool fields may parse it."""

    __slots__ = ()


class _Reader:
    """Reads typed values out of YAML mappings, collecting problems instead of raising."""

    def __init__(self, env: Mapping[str, str], base_dir: Path = Path()) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}  # secret's YAML path -> where it came from

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value: object, path: str) -> Mapping[Any, Any] | None:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return value
        self.fail(path, "must be a mapping")
        return None

    def section(
        self, m: Mapping[Any, Any], key: str, path: str, known: tuple[str, ...] | None = None
    ) -> Mapping[Any, Any]:
        sub = self.mapping(m.get(key), f"{path}.{key}") or {}
        if known is not None:
            self.unknown(sub, f"{path}.{key}", known)
        return sub

    def unknown(self, m: Mapping[Any, Any], path: str, known: tuple[str, ...]) -> None:
        for key in m:
            if key not in known:
                near = get_close_matches(str(key), known, n=1)
                self.fail(
                    f"{path}.{key}", "unknown key" + (f" (did you mean {near[0]}?)" if near else "")
                )

    def interpolate(self, text: str, path: str) -> object:
        unset: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name, has_default, default = match.group(1, 2, 3)
            value = self.env.get(name)
            if has_default is not None and not value:
                return str(default)
            if value is None:
                unset.append(name)
                return ""
            return value

        out, count = _VAR.subn(replace, text)
        for name in unset:
            self.fail(path, f"environment variable {name} is not set")
        return _FAILED if unset else _EnvText(out) if count else out

    def get(self, m: Mapping[Any, Any], key: str, path: str) -> object:
        value = m.get(key)
        if isinstance(value, str):
            value = self.interpolate(value, f"{path}.{key}")
        return _ABSENT if value is None or value == "" else value

    def text(
        self, m: Mapping[Any, Any], key: str, path: str, *, required: bool = False
    ) -> str | None:
        value = self.get(m, key, path)
        if value is _ABSENT and required:
            self.fail(f"{path}.{key}", "is required")
        if value is _ABSENT or value is _FAILED:
            return None
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", "must be a string")
            return None
        return str(value)

    def secret(self, m: Mapping[Any, Any], key: str, path: str) -> str | None:
        """A secret: text (plain or `${VAR}`), `{file: PATH}` or `{command: [...]}`.
        Records where it came from in `sources`; the value itself goes nowhere else."""
        where, raw = f"{path}.{key}", m.get(key)
        if isinstance(raw, Mapping):
            return self._secret_form(raw, where)
        value = self.text(m, key, path)
        if value is not None:
            names = sorted({x.group(1) for x in _VAR.finditer(raw)}) if isinstance(raw, str) else []
            self.sources[where] = (
                f"environment variable {', '.join(names)}" if names else "plaintext in the config"
            )
        return value

    def _secret_form(self, m: Mapping[Any, Any], where: str) -> str | None:
        self.unknown(m, where, ("file", "command", "timeout_seconds"))
        if ("file" in m) == ("command" in m):
            self.fail(where, "give either file: PATH or command: [program, args...]")
            return None
        if "file" in m:
            if "timeout_seconds" in m:
                self.fail(f"{where}.timeout_seconds", "applies to command only")
            if (name := self.text(m, "file", where, required=True)) is None:
                return None
            path = Path(os.path.normpath(self.base_dir / name))
            try:
                value = read_secret_file(path)
            except SecretError as err:
                self.fail(f"{where}.file", str(err))
                return None
            self.sources[where] = f"file {path}"
            return value
        timeout = self.seconds(m, "timeout_seconds", where, DEFAULT_COMMAND_TIMEOUT)
        if (argv := self._argv(m.get("command"), f"{where}.command")) is None:
            return None
        try:
            value = run_secret_command(argv, timeout, self.env, self.base_dir)
        except SecretError as err:
            self.fail(f"{where}.command", str(err))
            return None
        self.sources[where] = f"command {Path(argv[0]).name}"
        return value

    def _argv(self, items: object, path: str) -> list[str] | None:
        if not isinstance(items, list) or not items:
            self.fail(path, "must be a non-empty list: [program, args...] (no shell)")
            return None
        argv: list[str] = []
        for i, item in enumerate(items):
            value = self.interpolate(item, f"{path}[{i}]") if isinstance(item, str) else item
            if value is _FAILED:
                return None
            if not isinstance(value, str) or (i == 0 and not value):
                self.fail(f"{path}[{i}]", "must be a string")
                return None
            argv.append(str(value))
        return argv

    def url(
        self,
        m: Mapping[Any, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        schemes: tuple[str, ...] = ("http", "https"),
        plain: bool = True,
    ) -> str | None:
        """A URL with a host; `plain`: without a query (a base other paths are added to)."""
        value = self.text(m, key, path, required=required)
        if value is not None and not _is_url(value, schemes, plain):
            kind = "an http(s)" if "http" in schemes else f"a {schemes[0]}://"
            self.fail(f"{path}.{key}", f"must be {kind} URL")
            return None
        return value.rstrip("/") if value else None

    def choice(
        self, m: Mapping[Any, Any], key: str, path: str, options: tuple[str, ...], default: str
    ) -> str:
        value = self.text(m, key, path)
        if value is not None and value not in options:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(options)}")
        return value if value in options else default

    def flag(self, m: Mapping[Any, Any], key: str, path: str, default: bool) -> bool:
        value = self.get(m, key, path)
        if value is _ABSENT or value is _FAILED:
            return default
        if isinstance(value, _EnvText) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, bool):
            return value
        self.fail(f"{path}.{key}", "must be true or false")
        return default

    def number(
        self,
        m: Mapping[Any, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        positive: bool = False,
        high: Decimal | None = None,
        whole: bool = False,
    ) -> Decimal | None:
        """A number >= 0 (> 0 when `positive`, <= `high`); None when absent or reported."""
        value, where = self.get(m, key, path), f"{path}.{key}"
        if value is _ABSENT and required:
            self.fail(where, "is required")
        if value is _ABSENT or value is _FAILED:
            return None
        number = _as_decimal(value)
        if number is None or (whole and number != number.to_integral_value()):
            self.fail(where, "must be a whole number" if whole else "must be a number")
        elif high is not None and not 0 <= number <= high:
            self.fail(where, f"must be within 0..{high}")
        elif positive and number <= 0:
            self.fail(where, "must be greater than 0")
        elif number < 0:
            self.fail(where, "must not be negative")
        else:
            return number
        return None

    def decimal(
        self, m: Mapping[Any, Any], key: str, path: str, default: Decimal, *, required: bool = False
    ) -> Decimal:
        value = self.number(m, key, path, required=required)
        return default if value is None else value

    def seconds(
        self, m: Mapping[Any, Any], key: str, path: str, default: float, *, positive: bool = True
    ) -> float:
        value = self.number(m, key, path, positive=positive)
        return default if value is None else float(value)

    def integer(
        self, m: Mapping[Any, Any], key: str, path: str, default: int, *, positive: bool = False
    ) -> int:
        value = self.number(m, key, path, positive=positive, whole=True)
        return default if value is None else int(value)


def _as_decimal(value: object) -> Decimal | None:
    if isinstance(value, _EnvText):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = Decimal(str(value))
    else:
        return None
    return number if number.is_finite() else None


def _is_url(text: str, schemes: tuple[str, ...], plain: bool) -> bool:
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme in schemes
        and bool(parts.hostname)
        and not parts.fragment
        and not (plain and parts.query)
        and not any(c.isspace() for c in text)
    )


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


def _agents(r: _Reader, root: Mapping[Any, Any]) -> Mapping[str, AgentPolicy]:
    p = f"{_ROOT}.agents"
    m = r.mapping(root.get("agents"), p)
    if m is not None and not m:
        r.fail(p, "at least one agent is required")
    agents: dict[str, AgentPolicy] = {}
    key_owner: dict[str, str] = {}
    for agent_id, body in (m or {}).items():
        if not isinstance(agent_id, str) or not _AGENT_ID.fullmatch(agent_id):
            r.fail(f"{p}.{agent_id}", "agent id must match [A-Za-z0-9._-]{1,64}")
            continue
        if (agent := _agent(r, agent_id, body, f"{p}.{agent_id}")) is None:
            continue
        agents[agent_id] = agent
        owner = key_owner.setdefault(agent.api_key, agent_id) if agent.api_key else agent_id
        if owner != agent_id:
            r.fail(f"{p}.{agent_id}.api_key", f"must differ from agent {owner}'s")
    return MappingProxyType(agents)


def _agent(r: _Reader, agent_id: str, body: object, p: str) -> AgentPolicy | None:
    if not (m := r.mapping(body, p)):
        if m is not None:
            r.fail(p, "must set budget_total and tiers")
        return None
    r.unknown(m, p, _AGENT_KEYS)
    return AgentPolicy(
        agent_id=agent_id,
        budget_total=r.decimal(m, "budget_total", p, Decimal(0), required=True),
        budget_spent=r.decimal(m, "budget_spent", p, Decimal(0)),
        budget_source=r.choice(m, "budget_source", p, BUDGET_SOURCES, "config"),
        period=r.choice(m, "period", p, PERIODS, "monthly"),
        hard_cap=r.flag(m, "hard_cap", p, True),
        tiers=_tiers(r, m, f"{p}.tiers"),
        api_key=r.secret(m, "api_key", p),
    )


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
        ("max_body_bytes", "max_concurrent_upstream", "client_timeout_seconds"),
    )
    hm = r.section(root, "holds", _ROOT, ("default_max_tokens", "unknown_model_usd_per_token"))
    am = r.section(root, "alerts", _ROOT)  # may carry keys for other tools: not checked
    admin_token = _env_secret(
        r, "GATE_ADMIN_TOKEN", f"{_ROOT}.admin_token", None
    ) or r.secret(root, "admin_token", _ROOT)
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
            max_concurrent_upstream=r.integer(
                lm, "max_concurrent_upstream", lp, limits.max_concurrent_upstream, positive=True
            ),
            client_timeout_seconds=r.seconds(
                lm, "client_timeout_seconds", lp, limits.client_timeout_seconds
            ),
        ),
        require_agent_keys=r.flag(root, "require_agent_keys", _ROOT, False),
        holds=HoldsConfig(
            default_max_tokens=r.integer(
                hm, "default_max_tokens", hp, holds.default_max_tokens, positive=True
            ),
            unknown_model_usd_per_token=r.decimal(
                hm, "unknown_model_usd_per_token", hp, holds.unknown_model_usd_per_token
            ),
        ),
        console=_console(r, root),
        alerts=_alerts(r, am, f"{_ROOT}.alerts"),
        spend_store=_spend_store(r, root),
        sinks=_sinks(r, root),
        agents=_agents(r, root),
        source=source,
        secret_sources=MappingProxyType(r.sources),
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
            if not agent.api_key:
                r.fail(
                    f"{_ROOT}.agents.{agent.agent_id}.api_key",
                    "is required (require_agent_keys is true)",
                )
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
