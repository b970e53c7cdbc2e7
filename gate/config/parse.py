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

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gate.config.agents import _agents
from gate.config.reader import _Reader
from gate.config.sections import (
    _ROOT,
    _alerts,
    _allowed_hosts,
    _console,
    _env_secret,
    _holds,
    _limits,
    _openrouter,
    _retry,
)
from gate.config.stores import _sinks, _spend_store
from gate.config.types import (
    BUDGET_SOURCES,
    PERIODS,
    AgentPolicy,
    AlertsConfig,
    ConfigError,
    ConsoleConfig,
    GateConfig,
    HoldsConfig,
    LimitsConfig,
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


def _check_agent_keys(r: _Reader, config: GateConfig) -> None:
    """Agent keys that cannot work: without the gate's own upstream key, or missing
    where `require_agent_keys` asks for them."""
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
        retry=_retry(r, root),
        limits=_limits(r, root),
        require_agent_keys=r.flag(root, "require_agent_keys", _ROOT, False),
        allowed_hosts=_allowed_hosts(r, root),
        holds=_holds(r, root),
        console=_console(r, root),
        alerts=_alerts(r, am, f"{_ROOT}.alerts"),
        spend_store=_spend_store(r, root),
        sinks=_sinks(r, root),
        agents=_agents(r, root),
        source=source,
        secret_sources=MappingProxyType(r.sources),
        warnings=tuple(r.warnings),
    )
    _check_agent_keys(r, config)
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
