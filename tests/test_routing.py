"""Routing as plain tables: tiers, upstream models, holds, cost helpers, the upstream body.

The end-to-end walkthrough against a running gate is at the bottom.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.config import AgentPolicy, Tier
from gate.config.types import MAX_TOKENS_CEILING
from gate.context import GATE
from gate.core.cost import (
    ModelPrice,
    affordable_completion_tokens,
    flat_price,
    price_of,
    to_decimal,
    usage_cost,
    usage_tokens,
    worst_price,
)
from gate.core.router import (
    Admission,
    Refusal,
    admit,
    choose_tier,
    remaining_fraction,
    upstream_models,
)
from gate.http.apis import CHAT, ApiRequest, upstream_body
from gate.http.errors import GateError

from .support import ECONOMY, MID, PREMIUM, chat, make_config, request_lines, spend_lines

D = Decimal
TIERS = (
    Tier("premium", D("0.80"), tuple(PREMIUM)),
    Tier("mid", D("0.30"), tuple(MID)),
    Tier("economy", D("0.00"), tuple(ECONOMY)),
)
PRICES = {
    "anthropic/claude-sonnet-4.5": ModelPrice(D("0.000003"), D("0.000015")),
    "openai/gpt-5": ModelPrice(D("0.00000125"), D("0.00001")),
    "google/gemini-2.5-pro": ModelPrice(D("0.00000125"), D("0.00001")),
    "openai/gpt-5-mini": ModelPrice(D("0.00000025"), D("0.000002")),
    "meta-llama/llama-3.3-70b-instruct": ModelPrice(D("0.00000013"), D("0.00000039")),
    "deepseek/deepseek-chat-v3.1": ModelPrice(D("0.0000002"), D("0.0000008")),
    "mistralai/mistral-small-3.2-24b-instruct": ModelPrice(D("0.00000005"), D("0.0000001")),
}
UNKNOWN = D("0.00005")


def policy(hard_cap: bool = True, tiers: tuple[Tier, ...] = TIERS) -> AgentPolicy:
    return AgentPolicy("agent-1", D(50), D(0), "config", "monthly", hard_cap, tiers)


# --- choose_tier -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("committed", "hard_cap", "expected"),
    [
        ("0", True, "premium"),
        ("9.99", True, "premium"),  # 80.02 % left
        ("10", True, "mid"),  # exactly 80 % left: not above the threshold
        ("10.01", True, "mid"),
        ("20", True, "mid"),  # the walkthrough: 60 % left
        ("34.99", True, "mid"),  # 30.02 % left
        ("35", True, "economy"),  # exactly 30 % left
        ("40", True, "economy"),  # the walkthrough: 20 % left
        ("49.99", True, "economy"),
        ("50", True, None),  # nothing left, capped
        ("60", True, None),  # overspent, capped
        ("50", False, "economy"),  # nothing left, uncapped: the lowest tier
        ("60", False, "economy"),
        ("0", False, "premium"),
    ],
)
def test_choose_tier(committed: str, hard_cap: bool, expected: str | None) -> None:
    tier = choose_tier(TIERS, D(50), D(committed), hard_cap)
    assert (tier.name if tier else None) == expected


def test_choose_tier_zero_budget() -> None:
    assert choose_tier(TIERS, D(0), D(0), True) is None
    tier = choose_tier(TIERS, D(0), D(0), False)
    assert tier is not None and tier.name == "economy"
    assert remaining_fraction(D(0), D(0)) == 0


def test_choose_tier_below_every_threshold_uses_the_lowest() -> None:
    tiers = (Tier("a", D("0.5"), ("x/a",)), Tier("b", D("0.1"), ("x/b",)))
    tier = choose_tier(tiers, D(100), D(95), True)  # 5 % left: below 0.1, but not zero
    assert tier is not None and tier.name == "b"


# --- upstream_models ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("models", "requested", "expected"),
    [
        (PREMIUM, None, PREMIUM),
        (PREMIUM, "openai/gpt-5", ["openai/gpt-5", PREMIUM[0], PREMIUM[2]]),
        (PREMIUM, "google/gemini-2.5-pro", ["google/gemini-2.5-pro", *PREMIUM[:2]]),
        (PREMIUM, "openai/gpt-5:online", PREMIUM),  # a variant is another model
        (PREMIUM, "openai/gpt-4o", PREMIUM),  # outside the tier
        (
            ["openai/gpt-5:online", "openai/gpt-5"],
            "openai/gpt-5:online",
            ["openai/gpt-5:online", "openai/gpt-5"],
        ),
        (["a/1", "a/2", "a/3", "a/4", "a/5"], None, ["a/1", "a/2", "a/3"]),  # at most 3
        (["a/1", "a/2", "a/3", "a/4", "a/5"], "a/5", ["a/5", "a/1", "a/2"]),
    ],
)
def test_upstream_models(models: list[str], requested: str | None, expected: list[str]) -> None:
    tier = Tier("t", D(0), tuple(models))
    assert list(upstream_models(tier, requested)) == expected


def test_upstream_models_variant_of_a_listed_model_is_not_matched() -> None:
    tier = Tier("t", D(0), ("openai/gpt-5",))
    assert upstream_models(tier, "openai/gpt-5:nitro") == ("openai/gpt-5",)
    assert upstream_models(tier, "openai/gpt-5:floor") == ("openai/gpt-5",)


# --- admit -------------------------------------------------------------------------


def _admit(
    p: AgentPolicy, committed: str, prompt: int, max_tokens: int | None, model: str | None = None
) -> Admission | Refusal:
    return admit(p, p.budget_total, D(committed), model, prompt, max_tokens, PRICES, UNKNOWN, 4096)


def test_admit_holds_prompt_plus_completion_at_the_tiers_highest_price() -> None:
    decision = _admit(policy(), "0", 100, 1000, "openai/gpt-5")
    assert isinstance(decision, Admission)
    assert decision.tier.name == "premium"
    assert decision.models == ("openai/gpt-5", PREMIUM[0], PREMIUM[2])
    # sonnet is the dearest model the tier may answer with, even though gpt-5 was asked
    assert decision.hold == D("0.000003") * 100 + D("0.000015") * 1000
    assert decision.max_tokens == 1000
    assert decision.clamped is False


def test_admit_without_max_tokens_holds_the_default() -> None:
    decision = _admit(policy(), "0", 100, None)
    assert isinstance(decision, Admission)
    assert decision.hold == D("0.000003") * 100 + D("0.000015") * 4096
    # with a hard cap the hold's assumption is sent upstream, so it bounds the cost
    assert decision.max_tokens == 4096


def test_a_default_max_tokens_filled_in_with_the_budget_full_is_no_clamp() -> None:
    decision = _admit(policy(), "0", 100, None)
    assert isinstance(decision, Admission)
    assert (decision.max_tokens, decision.clamped) == (4096, False)


def test_a_default_max_tokens_lowered_by_the_budget_is_a_clamp() -> None:
    tier = Tier("only", D(0), ("openai/gpt-5",))
    decision = _admit(policy(tiers=(tier,)), "49.99", 100, None)
    assert isinstance(decision, Admission)
    assert decision.clamped is True and decision.max_tokens == 987


def test_admit_unknown_model_price() -> None:
    tier = Tier("only", D(0), ("vendor/unpriced", "openai/gpt-5-mini"))
    decision = _admit(policy(tiers=(tier,)), "0", 10, 100)
    assert isinstance(decision, Admission)
    assert decision.hold == UNKNOWN * 110


def test_admit_clamps_max_tokens_to_what_the_budget_pays_for() -> None:
    tier = Tier("only", D(0), ("openai/gpt-5",))
    p = policy(tiers=(tier,))
    # 0.01 left; the prompt costs 100 * 0.00000125; the rest buys 987 completion tokens
    decision = _admit(p, "49.99", 100, 5000)
    assert isinstance(decision, Admission)
    left = D("0.01") - D("0.00000125") * 100
    assert decision.max_tokens == int(left / D("0.00001")) == 987
    assert decision.clamped is True
    assert decision.hold == D("0.00000125") * 100 + D("0.00001") * 987
    assert decision.hold <= D("0.01")


def test_admit_keeps_a_max_tokens_that_fits() -> None:
    tier = Tier("only", D(0), ("openai/gpt-5",))
    decision = _admit(policy(tiers=(tier,)), "49.99", 100, 500)
    assert isinstance(decision, Admission)
    assert (decision.max_tokens, decision.clamped) == (500, False)


def test_admit_refuses_when_not_even_the_prompt_fits() -> None:
    tier = Tier("only", D(0), ("openai/gpt-5",))
    # 0.0001 left; 100 prompt tokens cost 0.000125
    decision = _admit(policy(tiers=(tier,)), "49.9999", 100, 10)
    assert isinstance(decision, Refusal)
    assert decision.tier == tier


def test_admit_refuses_an_exhausted_capped_budget() -> None:
    decision = _admit(policy(), "50", 1, 1)
    assert isinstance(decision, Refusal)
    assert decision.tier is None


def test_admit_never_clamps_or_refuses_without_hard_cap() -> None:
    p = policy(hard_cap=False)
    decision = _admit(p, "49.9999", 100, 5000)
    assert isinstance(decision, Admission)
    assert decision.tier.name == "economy"
    assert (decision.max_tokens, decision.clamped) == (None, False)
    worst = worst_price(PRICES, ECONOMY, UNKNOWN)
    assert decision.hold == worst.cost(100, 5000)
    overspent = _admit(p, "80", 100, None)
    assert isinstance(overspent, Admission)
    assert overspent.hold == worst.cost(100, 4096)


# --- cost helpers ------------------------------------------------------------------


def test_cost_helpers() -> None:
    price = ModelPrice(D("0.000001"), D("0.000002"), D("0.01"))
    assert price.cost(10, 5) == D("0.00002") + D("0.01")
    assert price_of(PRICES, "nope/model", UNKNOWN) == flat_price(UNKNOWN)
    assert price_of(PRICES, "openai/gpt-5", UNKNOWN) == PRICES["openai/gpt-5"]
    mixed = worst_price(PRICES, ["openai/gpt-5-mini", "anthropic/claude-sonnet-4.5"], UNKNOWN)
    assert mixed == ModelPrice(D("0.000003"), D("0.000015"))


def test_affordable_completion_tokens() -> None:
    price = ModelPrice(D("0.001"), D("0.01"), D("0.1"))
    assert affordable_completion_tokens(price, 100, D("0.2")) == 0  # 0.1 + 0.1 = all of it
    assert affordable_completion_tokens(price, 100, D("0.25")) == 5
    assert affordable_completion_tokens(price, 100, D("0.199")) == -1
    assert affordable_completion_tokens(ModelPrice(D(0), D(0)), 10, D(0)) == 2**31


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, D(0)),
        (0.1, D("0.1")),
        ("0.000015", D("0.000015")),
        (D("1.5"), D("1.5")),
        (True, None),
        (None, None),
        ("nan", None),
        ("inf", None),
        ("abc", None),
        ([1], None),
    ],
)
def test_to_decimal(value: object, expected: Decimal | None) -> None:
    assert to_decimal(value) == expected


def test_usage_helpers() -> None:
    assert usage_cost({"cost": 0}) == D(0)  # a cost of 0 is a cost
    assert usage_cost({"prompt_tokens": 3}) is None
    assert usage_tokens({"prompt_tokens": 3, "completion_tokens": 4}) == (3, 4)
    assert usage_tokens({"prompt_tokens": True, "completion_tokens": "4"}) == (0, 0)


# --- the upstream body -------------------------------------------------------------


def chat_request(body: dict[str, Any], size: int) -> ApiRequest:
    return CHAT.read(body, size, MAX_TOKENS_CEILING)


def _upstream(
    body: dict[str, Any], models: tuple[str, ...] = tuple(PREMIUM), max_tokens: int | None = None
) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    sent = upstream_body(chat_request(body, len(raw)), models, max_tokens)
    out: dict[str, Any] = json.loads(sent)
    return out


def test_upstream_body_replaces_models_and_drops_widening_fields() -> None:
    out = _upstream(
        chat(
            model="openai/gpt-4o",
            models=["openai/gpt-4o", "x-ai/grok-4"],
            route="fallback",
            preset="@preset/anything",
            temperature=0.3,
        )
    )
    assert out["model"] == PREMIUM[0]
    assert out["models"] == PREMIUM
    assert "route" not in out and "preset" not in out
    assert out["temperature"] == 0.3  # other fields pass as sent
    assert out["messages"] == chat()["messages"]


def test_upstream_body_provider_lists_naming_models_are_dropped() -> None:
    out = _upstream(
        chat(provider={"order": ["openai/gpt-4o"], "only": ["OpenAI", "Azure"], "sort": "price"})
    )
    assert out["provider"] == {"only": ["OpenAI", "Azure"], "sort": "price"}
    out = _upstream(chat(provider={"order": ["Anthropic"], "only": ["x-ai/grok-4"]}))
    assert out["provider"] == {"order": ["Anthropic"]}
    assert "provider" not in _upstream(chat(provider="openai/gpt-4o"))


def test_upstream_body_switches_usage_accounting_on() -> None:
    out = _upstream(chat(usage={"include": False}))
    assert out["usage"] == {"include": True}
    assert "stream_options" not in out  # not a stream
    out = _upstream(chat(stream=True))
    assert out["stream_options"] == {"include_usage": True}
    out = _upstream(chat(stream=True, stream_options={"include_usage": False, "other": 1}))
    assert out["stream_options"] == {"include_usage": True, "other": 1}


def test_upstream_body_max_tokens() -> None:
    assert "max_tokens" not in _upstream(chat())
    assert _upstream(chat(max_tokens=50))["max_tokens"] == 50  # left as sent
    assert _upstream(chat(), max_tokens=77)["max_tokens"] == 77  # set when clamped
    out = _upstream(chat(max_tokens=5000, max_completion_tokens=6000), max_tokens=77)
    assert (out["max_tokens"], out["max_completion_tokens"]) == (77, 77)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"model": "openai/gpt-5"},
        chat(model=5),
        chat(stream="yes"),
        chat(max_tokens=0),
        chat(max_tokens=True),
        chat(max_completion_tokens="10"),
    ],
)
def test_chat_request_refuses_unsound_fields(body: dict[str, Any]) -> None:
    with pytest.raises(GateError) as err:
        chat_request(body, 10)
    assert err.value.status == 400


# --- the walkthrough, against a running gate ---------------------------------------

ADMIN = {"Authorization": "Bearer t0k"}
AGENT_1 = {"X-Agent-ID": "agent-1"}


async def test_walkthrough(start_gate, mock, tmp_path: Path) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url, admin_token="t0k"))

    async def ask(expected_tier: str, expected_models: list[str]) -> dict[str, Any]:
        before = len(mock.state.requests)
        resp = await client.post("/v1/chat/completions", json=chat(), headers=AGENT_1)
        body = await resp.json()
        assert resp.status == 200, body
        assert len(mock.state.requests) == before + 1
        sent = mock.state.requests[-1]["body"]
        assert sent["models"] == expected_models
        assert sent["model"] == expected_models[0]
        assert resp.headers["X-Execwall-Tier"] == expected_tier
        assert resp.headers["X-Execwall-Models-Allowed"] == ",".join(expected_models)
        assert resp.headers["X-Execwall-Agent"] == "agent-1"
        assert body["_execwall"]["tier"] == expected_tier
        assert body["_execwall"]["models_allowed"] == expected_models
        return body

    async def admin(path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = await client.post(path, json=payload, headers=ADMIN)
        body = await resp.json()
        assert resp.status == 200, body
        return body

    await ask("premium", PREMIUM)
    state = await admin("/api/budget/agent-1", {"budget_spent": 20})
    assert (state["tier"], state["budget_spent"]) == ("mid", 20)
    await ask("mid", MID)
    state = await admin("/api/budget/agent-1", {"budget_spent": 40})
    assert state["tier"] == "economy"
    await ask("economy", ECONOMY)
    await admin("/api/budget/agent-1", {"budget_spent": 50})
    before = len(mock.state.requests)
    resp = await client.post("/v1/chat/completions", json=chat(), headers=AGENT_1)
    body = await resp.json()
    assert resp.status == 402
    assert body["error"]["type"] == "budget_exhausted"
    assert len(mock.state.requests) == before  # nothing went upstream
    state = await admin("/api/reset/agent-1")
    assert (state["tier"], state["budget_spent"]) == ("premium", 0)
    await ask("premium", PREMIUM)

    await client.app[GATE].ledger.spend_log.flush()
    lines = request_lines(tmp_path / "spend.jsonl")
    assert [(r["tier"], r["status"]) for r in lines] == [
        ("premium", 200),
        ("mid", 200),
        ("economy", 200),
        (None, 402),
        ("premium", 200),
    ]
    assert lines[3]["cost"] == 0
    events = [r["event"] for r in spend_lines(tmp_path / "spend.jsonl")]
    assert events.count("budget") == 3 and events.count("reset") == 1


def test_admit_holds_a_plugins_per_request_charge_on_top_of_tokens() -> None:
    tier = Tier("only", D(0), ("openai/gpt-5",))
    p = policy(tiers=(tier,))
    plain = admit(p, p.budget_total, D(0), None, 100, 500, PRICES, UNKNOWN, 4096)
    searched = admit(p, p.budget_total, D(0), None, 100, 500, PRICES, UNKNOWN, 4096, D("0.02"))
    assert isinstance(plain, Admission) and isinstance(searched, Admission)
    assert searched.hold == plain.hold + D("0.02")
    # with a hard cap the charge must fit too: 0.015 left pays for tokens, not the search
    assert isinstance(
        admit(p, p.budget_total, D("49.985"), None, 100, 500, PRICES, UNKNOWN, 4096, D("0.02")),
        Refusal,
    )


@pytest.mark.parametrize(
    ("extra", "plugins"),
    [
        ({"plugins": [{"id": "web"}]}, True),
        ({"web_search_options": {}}, True),
        ({"plugins": []}, False),
        ({}, False),
    ],
)
def test_chat_request_notices_plugins(extra: dict[str, Any], plugins: bool) -> None:
    body = chat(**extra)
    assert chat_request(body, len(json.dumps(body))).uses_plugins is plugins


async def test_a_plugins_request_holds_the_plugin_charge(start_gate, mock, tmp_path: Path) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url))
    plain = await client.post(
        "/v1/chat/completions", json=chat(max_tokens=10), headers={"X-Agent-ID": "agent-1"}
    )
    searched = await client.post(
        "/v1/chat/completions",
        json=chat(max_tokens=10, plugins=[{"id": "web"}]),
        headers={"X-Agent-ID": "agent-1"},
    )
    assert plain.status == searched.status == 200
    await client.app[GATE].ledger.spend_log.flush()
    held = [r["held"] for r in spend_lines(tmp_path / "spend.jsonl") if r["event"] == "hold"]
    assert len(held) == 2
    assert held[1] - held[0] >= D("0.02") - D("0.0001")  # a slightly longer body too
