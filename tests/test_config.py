"""gate.config: typed config from a dict or a file, every problem named by its YAML path."""

from __future__ import annotations

import copy
import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.config import (
    AgentPolicy,
    ConfigError,
    GateConfig,
    HoldsConfig,
    LimitsConfig,
    RetryConfig,
    load_config,
    parse_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DELETE = object()

BASE: dict[str, Any] = {
    "cost_routing": {
        "openrouter": {"base_url": "https://or.example/api/v1", "api_key": "or-key"},
        "agents": {
            "a": {
                "budget_total": 10,
                "tiers": [
                    {"threshold": 0.5, "models": ["m/premium"]},
                    {"threshold": 0, "models": ["m/cheap"]},
                ],
            },
        },
    },
}


def config_with(**changes: object) -> dict[str, Any]:
    """BASE with `changes` applied; keys are dotted paths below `cost_routing`
    (`agents.a.tiers.1.threshold`), a value of DELETE removes the key."""
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node: Any = raw["cost_routing"]
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return raw


def parse(
    raw: object, env: dict[str, str] | None = None, base_dir: Path = Path("cfg")
) -> GateConfig:
    return parse_config(raw, env=env or {}, base_dir=base_dir)


def problems_of(raw: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        parse(raw, env)
    assert str(excinfo.value) == "\n".join(excinfo.value.problems)
    return excinfo.value.problems


def agent(cfg: GateConfig, agent_id: str = "a") -> AgentPolicy:
    return cfg.agents[agent_id]


def test_base_config_parses_with_defaults() -> None:
    cfg = parse(BASE)
    assert cfg.openrouter.base_url == "https://or.example/api/v1"
    assert cfg.openrouter.api_key == "or-key"
    assert cfg.openrouter.timeout_seconds == 120.0
    assert dict(cfg.openrouter.headers) == {}
    assert cfg.spend_log == Path("cfg") / "spend.jsonl"
    assert cfg.spend_log_fsync is False
    assert cfg.admin_token is None
    assert cfg.retry == RetryConfig()
    assert cfg.limits == LimitsConfig()
    assert cfg.holds == HoldsConfig()
    assert cfg.console.enabled is False
    assert (cfg.alerts.webhook_url, cfg.alerts.format) == (None, "slack")
    assert (cfg.spend_store.backend, cfg.spend_store.url) == ("jsonl", None)
    a = agent(cfg)
    assert (a.agent_id, a.budget_total, a.budget_spent) == ("a", Decimal(10), Decimal(0))
    assert (a.budget_source, a.period, a.hard_cap, a.api_key) == ("local", "monthly", True, None)
    assert cfg.warnings == ()


@pytest.mark.parametrize("value", ["local", "jetpatch"])
def test_documented_budget_sources_are_read_as_written(value: str) -> None:
    cfg = parse(config_with(**{"agents.a.budget_source": value}))
    assert agent(cfg).budget_source == value
    assert cfg.warnings == ()


def test_older_budget_source_config_reads_as_local_with_a_warning() -> None:
    cfg = parse(config_with(**{"agents.a.budget_source": "config"}))
    assert agent(cfg).budget_source == "local"
    assert cfg.warnings == (
        "cost_routing.agents.a.budget_source: 'config' is an older spelling of 'local'; "
        "write local",
    )


def test_every_section_is_read() -> None:
    cfg = parse(
        config_with(
            **{
                "spend_log_fsync": True,
                "openrouter.base_url": "http://127.0.0.1:9000/api/v1/",
                "openrouter.timeout_seconds": 30,
                "openrouter.connect_timeout_seconds": 2.5,
                "openrouter.drain_timeout_seconds": 5,
                "openrouter.prices_refresh_seconds": 60,
                "openrouter.headers": {"X-Title": "gate"},
                "retry": {"max_retries": 0, "backoff_seconds": 0, "max_backoff_seconds": 1},
                "limits": {"max_body_bytes": 1024},
                "holds": {"default_max_tokens": 100, "unknown_model_usd_per_token": 0.000001},
                "alerts": {
                    "webhook_url": "https://discord.example/hook?wait=true",
                    "format": "discord",
                    "channel": "#ops",
                },
                "spend_store": {"backend": "redis", "url": "redis://localhost:6379/0"},
                "agents.a.budget_total": 0.1,
                "agents.a.budget_spent": 0.07,
                "agents.a.budget_source": "jetpatch",
                "agents.a.period": "never",
                "agents.a.hard_cap": False,
                "agents.a.api_key": "agent-key",
            }
        )
    )
    assert cfg.spend_log_fsync is True
    o = cfg.openrouter
    assert o.base_url == "http://127.0.0.1:9000/api/v1"  # trailing slash stripped
    assert (o.timeout_seconds, o.connect_timeout_seconds) == (30.0, 2.5)
    assert (o.drain_timeout_seconds, o.prices_refresh_seconds) == (5.0, 60.0)
    assert dict(o.headers) == {"X-Title": "gate"}
    assert cfg.retry == RetryConfig(max_retries=0, backoff_seconds=0.0, max_backoff_seconds=1.0)
    assert cfg.limits.max_body_bytes == 1024
    assert cfg.holds == HoldsConfig(100, Decimal("0.000001"))
    assert (cfg.alerts.webhook_url, cfg.alerts.format) == (
        "https://discord.example/hook?wait=true",
        "discord",
    )
    assert (cfg.spend_store.backend, cfg.spend_store.url) == ("redis", "redis://localhost:6379/0")
    a = agent(cfg)
    # Decimals straight from the YAML text, no float noise
    assert (a.budget_total, a.budget_spent) == (Decimal("0.1"), Decimal("0.07"))
    assert (a.budget_source, a.period, a.hard_cap, a.api_key) == (
        "jetpatch",
        "never",
        False,
        "agent-key",
    )


def test_config_is_immutable() -> None:
    cfg = parse(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.admin_token = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.agents["b"] = agent(cfg)  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.openrouter.headers["X"] = "y"  # type: ignore[index]


P = "cost_routing"
A = "cost_routing.agents.a"

PROBLEMS = [
    # the document
    ({"cost_routing": [1]}, "cost_routing: must be a mapping"),
    (config_with(agentz={}), "cost_routing.agentz: unknown key (did you mean agents?)"),
    (config_with(color="red"), "cost_routing.color: unknown key"),
    (config_with(spend_log=5), f"{P}.spend_log: must be a string"),
    (config_with(spend_log_fsync="yes"), f"{P}.spend_log_fsync: must be true or false"),
    (config_with(admin_token=123), f"{P}.admin_token: must be a string"),
    # openrouter
    (config_with(openrouter="x"), f"{P}.openrouter: must be a mapping"),
    (config_with(**{"openrouter.base_url": DELETE}), f"{P}.openrouter.base_url: is required"),
    (
        config_with(**{"openrouter.base_url": "ftp://or.example"}),
        f"{P}.openrouter.base_url: must be an http(s) URL",
    ),
    (
        config_with(**{"openrouter.base_url": "or.example/api/v1"}),
        f"{P}.openrouter.base_url: must be an http(s) URL",
    ),
    (
        config_with(**{"openrouter.base_url": "https://or.example/api?x=1"}),
        f"{P}.openrouter.base_url: must be an http(s) URL",
    ),
    (
        config_with(**{"openrouter.base_url": "https://or.example:port/"}),
        f"{P}.openrouter.base_url: must be an http(s) URL",
    ),
    (config_with(**{"openrouter.api_key": 42}), f"{P}.openrouter.api_key: must be a string"),
    (
        config_with(**{"openrouter.timeout_seconds": 0}),
        f"{P}.openrouter.timeout_seconds: must be greater than 0",
    ),
    (
        config_with(**{"openrouter.timeout_seconds": "120"}),
        f"{P}.openrouter.timeout_seconds: must be a number",
    ),
    (
        config_with(**{"openrouter.timeout_seconds": True}),
        f"{P}.openrouter.timeout_seconds: must be a number",
    ),
    (
        config_with(**{"openrouter.connect_timeout_seconds": -1}),
        f"{P}.openrouter.connect_timeout_seconds: must be greater than 0",
    ),
    (
        config_with(**{"openrouter.drain_timeout_seconds": float("inf")}),
        f"{P}.openrouter.drain_timeout_seconds: must be a number",
    ),
    (
        config_with(**{"openrouter.prices_refresh_seconds": [60]}),
        f"{P}.openrouter.prices_refresh_seconds: must be a number",
    ),
    (
        config_with(**{"openrouter.timeout": 5}),
        f"{P}.openrouter.timeout: unknown key (did you mean timeout_seconds?)",
    ),
    (
        config_with(**{"openrouter.headers": ["X-Title"]}),
        f"{P}.openrouter.headers: must be a mapping",
    ),
    (
        config_with(**{"openrouter.headers": {"Authorization": "Bearer x"}}),
        f"{P}.openrouter.headers.Authorization: is set by the gate and cannot be configured",
    ),
    (
        config_with(**{"openrouter.headers": {"X Title": "x"}}),
        f"{P}.openrouter.headers.X Title: must be a valid header name",
    ),
    (
        config_with(**{"openrouter.headers": {"X-Title": 5}}),
        f"{P}.openrouter.headers.X-Title: must be a string",
    ),
    (
        config_with(**{"openrouter.headers": {"X-Title": "a\r\nHost: evil"}}),
        f"{P}.openrouter.headers.X-Title: must be a single line",
    ),
    # retry, limits, holds
    (config_with(retry={"max_retries": -1}), f"{P}.retry.max_retries: must not be negative"),
    (config_with(retry={"max_retries": 1.5}), f"{P}.retry.max_retries: must be a whole number"),
    (
        config_with(retry={"backoff_seconds": -0.1}),
        f"{P}.retry.backoff_seconds: must not be negative",
    ),
    (
        config_with(retry={"max_backoff_seconds": "8"}),
        f"{P}.retry.max_backoff_seconds: must be a number",
    ),
    (config_with(retry={"jitter": 0.1}), f"{P}.retry.jitter: unknown key"),
    (
        config_with(limits={"max_body_bytes": 0}),
        f"{P}.limits.max_body_bytes: must be greater than 0",
    ),
    (
        config_with(holds={"default_max_tokens": 0}),
        f"{P}.holds.default_max_tokens: must be greater than 0",
    ),
    (
        config_with(holds={"unknown_model_usd_per_token": -1}),
        f"{P}.holds.unknown_model_usd_per_token: must not be negative",
    ),
    # console, alerts, spend_store
    (config_with(console={"enabled": "yes"}), f"{P}.console.enabled: must be true or false"),
    (config_with(console={"enabled": True}), f"{P}.console.url: is required"),
    (
        config_with(console={"enabled": True, "url": "console.example"}),
        f"{P}.console.url: must be an http(s) URL",
    ),
    (
        config_with(
            console={"enabled": True, "url": "https://c.example", "sync_interval_seconds": 0}
        ),
        f"{P}.console.sync_interval_seconds: must be greater than 0",
    ),
    (
        config_with(console={"enabled": True, "url": "https://c.example", "urll": 1}),
        f"{P}.console.urll: unknown key (did you mean url?)",
    ),
    (config_with(alerts={"format": "teams"}), f"{P}.alerts.format: must be one of slack, discord"),
    (
        config_with(alerts={"webhook_url": "hooks.example/x"}),
        f"{P}.alerts.webhook_url: must be an http(s) URL",
    ),
    (
        config_with(spend_store={"backend": "sqlite"}),
        f"{P}.spend_store.backend: must be one of jsonl, redis",
    ),
    (config_with(spend_store={"backend": "redis"}), f"{P}.spend_store.url: is required"),
    (
        config_with(spend_store={"backend": "redis", "url": "http://localhost:6379"}),
        f"{P}.spend_store.url: must be a redis:// URL",
    ),
    # agents
    (config_with(agents={}), f"{P}.agents: at least one agent is required"),
    (config_with(agents=DELETE), f"{P}.agents: at least one agent is required"),
    (config_with(agents=["a"]), f"{P}.agents: must be a mapping"),
    (
        config_with(**{"agents.bad id": BASE["cost_routing"]["agents"]["a"]}),
        f"{P}.agents.bad id: agent id must match [A-Za-z0-9._-]{{1,64}}",
    ),
    (
        config_with(**{"agents." + "x" * 65: BASE["cost_routing"]["agents"]["a"]}),
        f"{P}.agents.{'x' * 65}: agent id must match [A-Za-z0-9._-]{{1,64}}",
    ),
    (config_with(**{"agents.b": None}), f"{P}.agents.b: must set budget_total and tiers"),
    (config_with(**{"agents.b": "x"}), f"{P}.agents.b: must be a mapping"),
    (config_with(**{"agents.a.budget_total": DELETE}), f"{A}.budget_total: is required"),
    (config_with(**{"agents.a.budget_total": -1}), f"{A}.budget_total: must not be negative"),
    (config_with(**{"agents.a.budget_total": True}), f"{A}.budget_total: must be a number"),
    (config_with(**{"agents.a.budget_total": "50"}), f"{A}.budget_total: must be a number"),
    (config_with(**{"agents.a.budget_spent": -0.01}), f"{A}.budget_spent: must not be negative"),
    (
        config_with(**{"agents.a.budget_source": "console"}),
        f"{A}.budget_source: must be one of local, jetpatch",
    ),
    (
        config_with(**{"agents.a.period": "yearly"}),
        f"{A}.period: must be one of daily, weekly, monthly, never",
    ),
    (config_with(**{"agents.a.hard_cap": "yes"}), f"{A}.hard_cap: must be true or false"),
    (config_with(**{"agents.a.hard_cap": 1}), f"{A}.hard_cap: must be true or false"),
    (config_with(**{"agents.a.api_key": ["k"]}), f"{A}.api_key: must be a string"),
    (config_with(**{"agents.a.tierz": []}), f"{A}.tierz: unknown key (did you mean tiers?)"),
    # tiers
    (config_with(**{"agents.a.tiers": DELETE}), f"{A}.tiers: must be a non-empty list of tiers"),
    (config_with(**{"agents.a.tiers": []}), f"{A}.tiers: must be a non-empty list of tiers"),
    (
        config_with(**{"agents.a.tiers": {"threshold": 0}}),
        f"{A}.tiers: must be a non-empty list of tiers",
    ),
    (config_with(**{"agents.a.tiers.1": "cheap"}), f"{A}.tiers[1]: must be a mapping"),
    (
        config_with(**{"agents.a.tiers.1.threshold": 1.5}),
        f"{A}.tiers[1].threshold: must be within 0..1",
    ),
    (
        config_with(**{"agents.a.tiers.1.threshold": -0.1}),
        f"{A}.tiers[1].threshold: must be within 0..1",
    ),
    (config_with(**{"agents.a.tiers.1.threshold": DELETE}), f"{A}.tiers[1].threshold: is required"),
    (
        config_with(**{"agents.a.tiers.1.threshold": "0.3"}),
        f"{A}.tiers[1].threshold: must be a number",
    ),
    (
        config_with(**{"agents.a.tiers.1.threshold": 0.50}),
        f"{A}.tiers[1].threshold: must be unique (tiers[0] has it)",
    ),
    (
        config_with(**{"agents.a.tiers.0.modelz": ["m/x"]}),
        f"{A}.tiers[0].modelz: unknown key (did you mean models?)",
    ),
    (
        config_with(**{"agents.a.tiers.0.models": DELETE}),
        f"{A}.tiers[0].models: must be a non-empty list of model ids",
    ),
    (
        config_with(**{"agents.a.tiers.0.models": []}),
        f"{A}.tiers[0].models: must be a non-empty list of model ids",
    ),
    (
        config_with(**{"agents.a.tiers.0.models": "m/premium"}),
        f"{A}.tiers[0].models: must be a non-empty list of model ids",
    ),
    (
        config_with(**{"agents.a.tiers.0.models": ["m/a", ""]}),
        f"{A}.tiers[0].models[1]: must be a model id (text without spaces or commas)",
    ),
    (
        config_with(**{"agents.a.tiers.0.models": ["m/a", 7]}),
        f"{A}.tiers[0].models[1]: must be a model id (text without spaces or commas)",
    ),
    (
        config_with(**{"agents.a.tiers.0.models": ["m/a,m/b"]}),
        f"{A}.tiers[0].models[0]: must be a model id (text without spaces or commas)",
    ),
    (
        config_with(**{"agents.a.tiers.0.models": ["m/a", "m/b", "m/a"]}),
        f"{A}.tiers[0].models[2]: repeats m/a",
    ),
    (config_with(**{"agents.a.tiers.0.name": 5}), f"{A}.tiers[0].name: must be a string"),
    (
        config_with(**{"agents.a.tiers.0.name": "top\nX-Injected: 1"}),
        f"{A}.tiers[0].name: must be 1-64 printable ASCII characters",
    ),
    (
        config_with(**{"agents.a.tiers.0.name": "same", "agents.a.tiers.1.name": "same"}),
        f"{A}.tiers: tier name same is used twice",
    ),
    # keys
    (
        config_with(
            **{
                "agents.a.api_key": "k1",
                "agents.b": {
                    "budget_total": 1,
                    "api_key": "k1",
                    "tiers": [{"threshold": 0, "models": ["m/x"]}],
                },
            }
        ),
        f"{P}.agents.b.api_key: must differ from agent a's",
    ),
    (
        config_with(**{"openrouter.api_key": DELETE, "agents.a.api_key": "agent-key"}),
        f"{A}.api_key: needs cost_routing.openrouter.api_key (pass-through sends the client's "
        "Authorization upstream)",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), PROBLEMS, ids=[p[1] for p in PROBLEMS])
def test_each_problem_is_one_line_naming_its_path(raw: object, expected: str) -> None:
    assert problems_of(raw) == [expected]


@pytest.mark.parametrize(
    "raw", [None, {}, [], "cost_routing", {"cost_routing": None}, {"routing": {}}]
)
def test_missing_cost_routing(raw: object) -> None:
    assert problems_of(raw) == ["cost_routing: missing"]


def test_all_problems_are_reported_together() -> None:
    problems = problems_of(
        config_with(
            **{
                "openrouter.base_url": "ftp://x",
                "retry": {"max_retries": -1},
                "agents.a.period": "hourly",
                "agents.a.tiers.0.threshold": 2,
                "agents.a.tiers.1.models": [],
                "agents.a.tiers.1.colour": "red",
            }
        )
    )
    assert sorted(problems) == sorted(
        [
            f"{P}.openrouter.base_url: must be an http(s) URL",
            f"{P}.retry.max_retries: must not be negative",
            f"{A}.period: must be one of daily, weekly, monthly, never",
            f"{A}.tiers[0].threshold: must be within 0..1",
            f"{A}.tiers[1].models: must be a non-empty list of model ids",
            f"{A}.tiers[1].colour: unknown key",
        ]
    )


# --- interpolation -------------------------------------------------------------------


def test_set_variable_is_replaced() -> None:
    raw = config_with(
        **{"openrouter.api_key": "${OR_KEY}", "openrouter.base_url": "https://${OR_HOST}/api/v1"}
    )
    cfg = parse(raw, env={"OR_KEY": "sk-or-1", "OR_HOST": "or.example"})
    assert cfg.openrouter.api_key == "sk-or-1"
    assert cfg.openrouter.base_url == "https://or.example/api/v1"


def test_unset_variable_is_a_problem_naming_the_path() -> None:
    raw = config_with(**{"openrouter.api_key": "${OPENROUTER_API_KEY}"})
    assert problems_of(raw) == [
        f"{P}.openrouter.api_key: environment variable OPENROUTER_API_KEY is not set"
    ]


def test_unset_variables_in_tiers_and_agents_name_their_paths() -> None:
    raw = config_with(
        **{
            "agents.a.tiers.0.models": ["m/a", "${PREMIUM_MODEL}"],
            "agents.a.api_key": "${AGENT_A_KEY}",
        }
    )
    assert sorted(problems_of(raw)) == [
        f"{A}.api_key: environment variable AGENT_A_KEY is not set",
        f"{A}.tiers[0].models[1]: environment variable PREMIUM_MODEL is not set",
    ]
    cfg = parse(raw, env={"PREMIUM_MODEL": "m/b", "AGENT_A_KEY": "ak"})
    assert agent(cfg).tiers[0].models == ("m/a", "m/b")
    assert agent(cfg).api_key == "ak"


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${BASE:-https://d.example/v1}", {}, "https://d.example/v1"),
        ("${BASE:-https://d.example/v1}", {"BASE": ""}, "https://d.example/v1"),  # as the shell
        ("${BASE:-https://d.example/v1}", {"BASE": "http://set.example"}, "http://set.example"),
    ],
)
def test_default_applies_when_unset_or_empty(
    value: str, env: dict[str, str], expected: str
) -> None:
    cfg = parse(config_with(**{"openrouter.base_url": value}), env=env)
    assert cfg.openrouter.base_url == expected


def test_empty_default_means_not_set() -> None:
    raw = config_with(
        **{
            "openrouter.api_key": "${OR_KEY:-}",
            "admin_token": "${TOKEN:-}",
            "spend_log": "${SPEND_LOG:-}",
        }
    )
    cfg = parse(raw, base_dir=Path("base"))
    assert cfg.openrouter.api_key is None  # pass-through
    assert cfg.admin_token is None
    assert cfg.spend_log == Path("base") / "spend.jsonl"


def test_other_dollar_forms_are_left_alone() -> None:
    raw = config_with(**{"openrouter.headers": {"X-Title": "a$$b $HOME ${ unclosed"}})
    assert parse(raw).openrouter.headers["X-Title"] == "a$$b $HOME ${ unclosed"


def test_variables_in_unknown_alert_keys_are_not_read() -> None:
    raw = config_with(alerts={"format": "slack", "channel": "${SLACK_CHANNEL}"})
    assert parse(raw).alerts.format == "slack"


def test_numbers_and_bools_may_come_from_variables() -> None:
    raw = config_with(
        **{
            "agents.a.budget_total": "${BUDGET:-50}",
            "agents.a.hard_cap": "${HARD_CAP:-false}",
            "limits": {"max_body_bytes": "${MAX_BODY}"},
        }
    )
    cfg = parse(raw, env={"MAX_BODY": "2048"})
    assert (agent(cfg).budget_total, agent(cfg).hard_cap) == (Decimal(50), False)
    assert cfg.limits.max_body_bytes == 2048
    assert problems_of(raw, env={"BUDGET": "lots", "MAX_BODY": "1"}) == [
        f"{A}.budget_total: must be a number"
    ]


def test_disabled_console_needs_none_of_its_variables() -> None:
    raw = config_with(
        console={
            "enabled": False,
            "url": "${JETPATCH_URL}",
            "api_key": "${JETPATCH_API_KEY}",
            "sync_interval_seconds": -1,
        }
    )
    assert parse(raw).console.enabled is False


def test_enabled_console_needs_its_variables() -> None:
    raw = config_with(
        console={"enabled": True, "url": "${JETPATCH_URL}", "api_key": "${JETPATCH_API_KEY}"}
    )
    assert sorted(problems_of(raw)) == [
        f"{P}.console.api_key: environment variable JETPATCH_API_KEY is not set",
        f"{P}.console.url: environment variable JETPATCH_URL is not set",
    ]
    cfg = parse(raw, env={"JETPATCH_URL": "https://console.example/", "JETPATCH_API_KEY": "jp"})
    assert (cfg.console.enabled, cfg.console.url, cfg.console.api_key) == (
        True,
        "https://console.example",
        "jp",
    )
    assert cfg.console.sync_interval_seconds == 60.0


def test_console_api_key_falls_back_to_jetpatch_env() -> None:
    raw = config_with(console={"enabled": True, "url": "https://console.example"})
    assert parse(raw, env={"JETPATCH_API_KEY": "from-env"}).console.api_key == "from-env"
    assert parse(raw).console.api_key is None


# --- values ------------------------------------------------------------------------


def test_spend_log_relative_to_base_dir(tmp_path: Path) -> None:
    cfg = parse(config_with(spend_log="logs/spend.jsonl"), base_dir=tmp_path)
    assert cfg.spend_log == tmp_path / "logs" / "spend.jsonl"
    cfg = parse(config_with(spend_log="../var/spend.jsonl"), base_dir=tmp_path / "configs")
    assert cfg.spend_log == tmp_path / "var" / "spend.jsonl"
    absolute = tmp_path / "elsewhere.jsonl"
    assert parse(config_with(spend_log=str(absolute)), base_dir=Path("x")).spend_log == absolute


@pytest.mark.parametrize("value", [None, ""])
def test_openrouter_key_absent_or_empty_is_pass_through(value: str | None) -> None:
    assert parse(config_with(**{"openrouter.api_key": value})).openrouter.api_key is None
    assert parse(config_with(**{"openrouter.api_key": DELETE})).openrouter.api_key is None


@pytest.mark.parametrize(
    ("env", "configured", "expected"),
    [
        ({"GATE_ADMIN_TOKEN": "from-env"}, "from-config", "from-env"),
        ({"GATE_ADMIN_TOKEN": ""}, "from-config", "from-config"),
        ({}, "from-config", "from-config"),
        ({"GATE_ADMIN_TOKEN": "from-env"}, None, "from-env"),
        ({}, "", None),
    ],
)
def test_gate_admin_token_env_overrides_config(
    env: dict[str, str], configured: str | None, expected: str | None
) -> None:
    assert parse(config_with(admin_token=configured), env=env).admin_token == expected


def tiers_of(thresholds: list[float], names: list[str | None] | None = None) -> dict[str, Any]:
    names = names or [None] * len(thresholds)
    tiers = [
        {"threshold": t, "models": [f"m/{t}"]} | ({"name": n} if n else {})
        for t, n in zip(thresholds, names, strict=True)
    ]
    return config_with(**{"agents.a.tiers": tiers})


def test_tiers_sorted_by_threshold_descending_with_three_default_names() -> None:
    tiers = agent(parse(tiers_of([0, 0.3, 0.8]))).tiers
    assert [t.threshold for t in tiers] == [Decimal("0.8"), Decimal("0.3"), Decimal("0")]
    assert [t.name for t in tiers] == ["premium", "mid", "economy"]
    assert [t.models for t in tiers] == [("m/0.8",), ("m/0.3",), ("m/0",)]


@pytest.mark.parametrize(
    ("thresholds", "names"),
    [
        ([0.5], ["tier-1"]),
        ([0, 0.5], ["tier-1", "tier-2"]),
        ([0.1, 0.9, 0.5, 0], ["tier-1", "tier-2", "tier-3", "tier-4"]),
    ],
)
def test_other_tier_counts_are_numbered(thresholds: list[float], names: list[str]) -> None:
    tiers = agent(parse(tiers_of(thresholds))).tiers
    assert [t.name for t in tiers] == names
    assert [t.threshold for t in tiers] == sorted((t.threshold for t in tiers), reverse=True)


def test_explicit_tier_names_are_kept() -> None:
    tiers = agent(parse(tiers_of([0, 0.8, 0.3], ["floor", "gold", None]))).tiers
    assert [t.name for t in tiers] == ["gold", "mid", "floor"]


def test_thresholds_are_exact_decimals() -> None:
    tiers = agent(parse(tiers_of([0.1, 0.7]))).tiers
    assert [str(t.threshold) for t in tiers] == ["0.7", "0.1"]


# --- files -------------------------------------------------------------------------


SHIPPED_KEYS = {"AGENT_1_API_KEY": "k1", "AGENT_2_API_KEY": "k2", "DEFAULT_AGENT_API_KEY": "k3"}


def test_policy_yaml_loads_with_the_key() -> None:
    path = CONFIGS / "policy.yaml"
    cfg = load_config(path, env={"OPENROUTER_API_KEY": "x", **SHIPPED_KEYS})
    assert cfg.source == path
    assert cfg.openrouter.api_key == "x"
    assert cfg.openrouter.base_url == "https://openrouter.ai/api/v1"
    assert cfg.spend_log == CONFIGS.parent / "var" / "spend.jsonl"
    assert cfg.console.enabled is False
    assert cfg.admin_token is None
    assert (cfg.retry, cfg.limits, cfg.holds) == (RetryConfig(), LimitsConfig(), HoldsConfig())
    assert list(cfg.agents) == ["agent-1", "agent-2", "default"]
    budgets = {a.agent_id: (a.budget_total, a.period, a.hard_cap) for a in cfg.agents.values()}
    assert budgets == {
        "agent-1": (Decimal(50), "monthly", True),
        "agent-2": (Decimal(10), "daily", True),
        "default": (Decimal(5), "daily", True),
    }
    for a in cfg.agents.values():
        assert [(t.name, t.threshold) for t in a.tiers] == [
            ("premium", Decimal("0.8")),
            ("mid", Decimal("0.3")),
            ("economy", Decimal("0")),
        ]
        assert a.tiers[0].models == (
            "anthropic/claude-sonnet-4.5",
            "openai/gpt-5",
            "google/gemini-2.5-pro",
        )
        assert a.tiers[2].models == (
            "meta-llama/llama-3.3-70b-instruct",
            "deepseek/deepseek-chat-v3.1",
            "mistralai/mistral-small-3.2-24b-instruct",
        )


def test_policy_yaml_without_its_keys_names_each_variable_once() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(CONFIGS / "policy.yaml", env={})
    assert excinfo.value.problems == [
        "cost_routing.openrouter.api_key: environment variable OPENROUTER_API_KEY is not set",
        "cost_routing.agents.agent-1.api_key: environment variable AGENT_1_API_KEY is not set",
        "cost_routing.agents.agent-2.api_key: environment variable AGENT_2_API_KEY is not set",
        "cost_routing.agents.default.api_key: "
        "environment variable DEFAULT_AGENT_API_KEY is not set",
    ]


def test_policy_yaml_honours_its_variables(tmp_path: Path) -> None:
    cfg = load_config(
        CONFIGS / "policy.yaml",
        env={
            "OPENROUTER_API_KEY": "x",
            "OPENROUTER_BASE_URL": "http://127.0.0.1:9000/api/v1",
            "SPEND_LOG": str(tmp_path / "s.jsonl"),
            "GATE_ADMIN_TOKEN": "t",
            **SHIPPED_KEYS,
        },
    )
    assert cfg.openrouter.base_url == "http://127.0.0.1:9000/api/v1"
    assert (cfg.spend_log, cfg.admin_token) == (tmp_path / "s.jsonl", "t")


def test_examples_load() -> None:
    minimal = load_config(CONFIGS / "examples" / "minimal.yaml", env={"OPENROUTER_API_KEY": "x"})
    assert [t.name for t in minimal.agents["default"].tiers] == ["tier-1"]
    passthrough = load_config(CONFIGS / "examples" / "passthrough.yaml", env={})
    assert passthrough.openrouter.api_key is None
    assert passthrough.agents["default"].hard_cap is False


def write(tmp_path: Path, text: str, name: str = "gate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, env={})
    assert all("\n" not in line for line in excinfo.value.problems)
    return excinfo.value.problems


def test_load_resolves_paths_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write(
        tmp_path / "sub",
        """
cost_routing:
  spend_log: logs/spend.jsonl
  openrouter: {base_url: "https://or.example/api/v1"}
  agents:
    a: {budget_total: 1, tiers: [{threshold: 0, models: [m/x]}]}
""",
    )
    cfg = load_config(path, env={})
    assert cfg.spend_log == tmp_path / "sub" / "logs" / "spend.jsonl"
    assert cfg.source == path


def test_python_tags_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, f'cost_routing: !!python/object/apply:os.system ["touch {marker}"]\n')
    [problem] = load_problems(path)
    assert problem.startswith(f"{path}:1:")
    assert "invalid YAML" in problem and "python/object/apply:os.system" in problem
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "cost_routing: [1,\n",
        "cost_routing:\n\tagents: {}\n",
        "cost_routing: {}\ncost_routing: {}\n",  # a duplicate key is refused, not last-wins
        "cost_routing: *nowhere\n",
    ],
)
def test_invalid_yaml_is_one_line(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    [problem] = load_problems(path)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert load_problems(path) == [f"{path}: cannot read config: No such file or directory"]


def test_empty_file_lacks_cost_routing(tmp_path: Path) -> None:
    assert load_problems(write(tmp_path, "# nothing\n")) == ["cost_routing: missing"]


def test_file_problems_all_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
cost_routing:
  openrouter: {base_url: "https://or.example", api_key: "${OR_KEY}"}
  agents:
    agent-1:
      budget_total: 50
      hard_cap: yes
      tiers:
        - {threshold: 0.8, models: [m/a]}
        - {threshold: 1.3, models: [m/b]}
""",
    )
    assert load_problems(path) == [
        f"{P}.openrouter.api_key: environment variable OR_KEY is not set",
        f"{P}.agents.agent-1.hard_cap: must be true or false",
        f"{P}.agents.agent-1.tiers[1].threshold: must be within 0..1",
    ]
