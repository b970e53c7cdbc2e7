"""Holds cover what a body can cost, every count is bounded, money stays exact and
finite (issue 12, findings 6 and 12). Tables call the pure functions without a server;
the end-to-end checks read the hold lines a running gate writes."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from gate.books.holds import Hold, HoldDefaults, HoldRequest
from gate.books.ledger import Ledger
from gate.books.spendlog import SpendLog
from gate.config import AgentPolicy, ConfigError, Tier
from gate.context import GATE
from gate.core.calibrate import DEFAULT_FACTOR
from gate.core.cost import (
    IMAGE_PROMPT_TOKENS,
    WEB_RESULT_USD,
    BodyCost,
    ModelPrice,
    hold_usd,
    worst_price,
)
from gate.core.jsonfmt import dumps
from gate.core.prompt import estimate_prompt
from gate.core.router import Admission, Refusal, admit, remaining_fraction
from gate.http.demand import read_demand
from gate.http.errors import GateError
from gate.http.intake import Caller
from gate.http.relay import Call
from gate.upstream.prices import parse_models

from .support import agent, chat, make_config, spend_lines

D = Decimal
SONNET = ModelPrice(D("0.000003"), D("0.000015"))
SEARCHY = ModelPrice(D("0.000001"), D("0.000002"), image=D("0.001"), web_search=D("0.01"))
CEILING = 1_000_000


def strict(text: str) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# --- hold_usd: what each part of a body can be billed ------------------------------


@pytest.mark.parametrize(
    ("price", "prompt", "completion", "body", "extra", "expected"),
    [
        (SONNET, 100, 1000, BodyCost(), D(0), D("0.0003") + D("0.015")),
        # n choices: n completions, one prompt
        (SONNET, 100, 1000, BodyCost(choices=4), D(0), D("0.0003") + 4 * D("0.015")),
        # images: the per-image price and the tokens one image may be billed as
        (
            SEARCHY,
            10,
            0,
            BodyCost(images=2),
            D(0),
            D("0.00001") + 2 * (D("0.001") + IMAGE_PROMPT_TOKENS * D("0.000001")),
        ),
        # web plugin results at $4 per 1000, a native search at the model's price
        (SEARCHY, 0, 0, BodyCost(web_results=20), D(0), 20 * WEB_RESULT_USD),
        (SEARCHY, 0, 0, BodyCost(native_searches=1), D(0), D("0.01")),
        # no web_search price: a native search is held as the web plugin's default
        (SONNET, 0, 0, BodyCost(native_searches=1), D(0), 5 * WEB_RESULT_USD),
        # a flat charge for what has no price
        (SONNET, 0, 0, BodyCost(), D("0.02"), D("0.02")),
        # rounded up to whole pico-USD
        (ModelPrice(D("1e-13"), D(0)), 3, 0, BodyCost(), D(0), D("1e-12")),
    ],
)
def test_hold_usd_table(
    price: ModelPrice,
    prompt: int,
    completion: int,
    body: BodyCost,
    extra: Decimal,
    expected: Decimal,
) -> None:
    assert hold_usd(price, prompt, completion, body, extra) == expected


# --- read_demand: the body's counts, checked ------------------------------------------


def demand_of(**fields: Any) -> Any:
    body = chat(**fields)
    return read_demand(body, len(json.dumps(body)), CEILING)


def test_read_demand_counts_choices_reasoning_web_and_images() -> None:
    d = demand_of(n=3, max_tokens=50, reasoning={"max_tokens": 2000})
    assert (d.max_tokens, d.body.choices, d.body.reasoning_tokens) == (50, 3, 2000)
    d = demand_of(plugins=[{"id": "web", "max_results": 12}, {"id": "file-parser"}])
    assert (d.body.web_results, d.body.native_searches, d.unpriced_plugins) == (12, 1, 1)
    d = demand_of(plugins=[{"id": "web"}])
    assert d.body.web_results == 5
    d = demand_of(web_search_options={"search_context_size": "high"})
    assert (d.body.web_results, d.body.native_searches) == (0, 1)
    d = demand_of(model="openai/gpt-5:online")
    assert (d.body.web_results, d.body.native_searches) == (5, 1)


def test_read_demand_does_not_count_image_bytes_as_text() -> None:
    image = "data:image/png;base64," + "A" * 300_000
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": image}},
            ],
        }
    ]
    body = chat(messages=messages)
    size = len(json.dumps(body))
    d = read_demand(body, size, CEILING)
    assert d.body.images == 1
    text_only = chat(messages=[{**messages[0], "content": [messages[0]["content"][0]]}])
    assert d.prompt_tokens == estimate_prompt(text_only) < 50


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": 10**40},
        {"max_tokens": 10**320},
        {"max_completion_tokens": CEILING + 1},
        {"max_tokens": 0},
        {"n": 0},
        {"n": 129},
        {"n": True},
        {"n": 2.0},
        {"reasoning": {"max_tokens": 10**40}},
        {"plugins": [{"id": "web", "max_results": 10**9}]},
    ],
)
def test_read_demand_refuses_a_count_out_of_bounds(fields: dict[str, Any]) -> None:
    with pytest.raises(GateError) as err:
        demand_of(**fields)
    assert err.value.status == 400


# --- admit: the hold, its limits ---------------------------------------------------------

TIER = Tier("only", D(0), ("anthropic/claude-sonnet-4.5",))
PRICES = {"anthropic/claude-sonnet-4.5": SONNET}


def policy(hard_cap: bool, total: str = "50") -> AgentPolicy:
    return AgentPolicy("a", D(total), D(0), "config", "monthly", hard_cap, (TIER,))


def test_admit_holds_n_choices_and_reasoning_without_max_tokens() -> None:
    body = BodyCost(choices=3, reasoning_tokens=2000)
    decision = admit(policy(False), D(50), D(0), None, 100, None, PRICES, D(1), 4096, body=body)
    assert isinstance(decision, Admission)
    # reasoning tokens are output tokens: without max_tokens they come on top of the answer
    assert decision.hold == D("0.0003") + 3 * (4096 + 2000) * D("0.000015")
    # max_tokens bounds reasoning too
    decision = admit(policy(False), D(50), D(0), None, 100, 500, PRICES, D(1), 4096, body=body)
    assert isinstance(decision, Admission)
    assert decision.hold == D("0.0003") + 3 * 500 * D("0.000015")


def test_admit_with_a_hard_cap_clamps_each_of_n_choices_to_what_is_left() -> None:
    body = BodyCost(choices=4)
    decision = admit(
        policy(True), D(50), D("49.99"), None, 100, 5000, PRICES, D(1), 4096, body=body
    )
    assert isinstance(decision, Admission) and decision.clamped
    assert decision.max_tokens == int((D("0.01") - D("0.0003")) / (4 * D("0.000015")))
    assert decision.hold <= D("0.01")


def test_admit_bounds_the_hold_by_the_context_length() -> None:
    prices = {
        "anthropic/claude-sonnet-4.5": ModelPrice(
            SONNET.prompt, SONNET.completion, context_length=8000
        )
    }
    decision = admit(policy(False), D(50), D(0), None, 100, 10**6, prices, D(1), 4096)
    assert isinstance(decision, Admission)
    assert decision.hold == D("0.0003") + 8000 * D("0.000015")


def test_admit_limits_or_refuses_a_hold_past_the_largest_one_request_may_place() -> None:
    # soft cap: max_tokens is lowered so the hold fits max_hold_usd
    decision = admit(
        policy(False), D(50), D(0), None, 100, 10**7, PRICES, D(1), 4096, max_hold_usd=D(1)
    )
    assert isinstance(decision, Admission)
    assert decision.clamped and decision.max_tokens is not None and decision.hold <= 1
    # nothing left to lower: refused as a bad request, not as a spent budget
    body = BodyCost(images=10**5)
    refused = admit(
        policy(False), D(50), D(0), None, 100, 10, PRICES, D(1), 4096, body=body, max_hold_usd=D(1)
    )
    assert isinstance(refused, Refusal) and refused.status == 400
    # a hard cap whose budget is larger than one hold: the same bound
    refused = admit(
        policy(True, "10000"),
        D(10000),
        D(0),
        None,
        100,
        10,
        PRICES,
        D(1),
        4096,
        body=body,
        max_hold_usd=D(1),
    )
    assert isinstance(refused, Refusal) and refused.status == 400


def test_worst_price_keeps_the_largest_known_context_and_unknown_stays_unknown() -> None:
    prices = {
        "a/x": ModelPrice(D(1), D(1), context_length=1000),
        "b/y": ModelPrice(D(1), D(1), context_length=5000),
    }
    assert worst_price(prices, ["a/x", "b/y"], D(1)).context_length == 5000
    assert worst_price(prices, ["a/x", "c/unlisted"], D(1)).context_length is None


def test_parse_models_keeps_context_length_and_image_and_web_search_prices() -> None:
    document = {
        "data": [
            {
                "id": "v/m",
                "context_length": 200000,
                "pricing": {
                    "prompt": "0.000003",
                    "completion": "0.000015",
                    "image": "0.0048",
                    "web_search": "0.01",
                },
            },
            {"id": "v/odd", "context_length": "big", "pricing": {"prompt": "0", "completion": "0"}},
        ]
    }
    prices = parse_models(document)
    assert prices["v/m"].context_length == 200000
    assert (prices["v/m"].image, prices["v/m"].web_search) == (D("0.0048"), D("0.01"))
    assert prices["v/odd"].context_length is None


# --- money stays exact and finite ------------------------------------------------------


def test_json_out_of_the_gate_never_carries_a_non_finite_number() -> None:
    text = dumps({"a": D("Infinity"), "b": [float("nan")], "c": D("1E+400"), "d": D("1.5")})
    assert strict(text) == {"a": None, "b": [None], "c": None, "d": 1.5}


class Clock:
    def __call__(self) -> datetime:
        return datetime(2026, 11, 20, 12, tzinfo=UTC)


async def test_a_huge_hold_settled_leaves_held_the_sum_of_the_open_holds(tmp_path: Path) -> None:
    """The soft-cap agent that climbed back to premium: a hold of 10^40 tokens absorbed
    the other open hold in 28-digit Decimal, and settling it left `held` short."""
    cfg = make_config(
        tmp_path,
        "http://127.0.0.1:9/api/v1",
        agents={"a": agent(50, hard_cap=False, budget_spent=45)},
    )
    log = SpendLog(tmp_path / "spend.jsonl")
    await log.start()
    try:
        await _huge_hold_then_small(Ledger(cfg.agents, log, Clock()))
    finally:
        await log.close()


async def _huge_hold_then_small(ledger: Ledger) -> None:
    defaults = HoldDefaults(D("0.00005"), 100)
    small = await ledger.reserve("a", "r1", HoldRequest(None, 10, 50), {}, defaults)
    huge = await ledger.reserve("a", "r2", HoldRequest(None, 10, 10**40), {}, defaults)
    assert isinstance(small, tuple) and isinstance(huge, tuple)
    ledger.settle(huge[1], D(0), {"status": 400, "cost_source": "none"})
    acct = ledger.account("a")
    assert acct is not None
    assert acct.held == small[1].amount > 0
    assert huge[0].hold <= 1000  # holds.max_hold_usd
    assert remaining_fraction(acct.budget_total, acct.committed) < D("0.1")
    assert ledger.current_tier("a").name == "economy"  # type: ignore[union-attr]
    ledger.settle(small[1], D(0), {"status": 200})
    assert ledger.account("a").held == 0  # type: ignore[union-attr]


async def test_a_max_tokens_of_10_to_the_320_is_refused_and_nothing_writes_infinity(
    start_gate, mock, tmp_path: Path
) -> None:
    cfg = make_config(
        tmp_path,
        mock.base_url,
        agents={"a": agent(50, hard_cap=False)},
        admin_token="adm-" + "7" * 24,
    )
    client = await start_gate(cfg)
    raw = json.dumps(chat(max_tokens=10**320))
    resp = await client.post(
        "/v1/chat/completions",
        data=raw,
        headers={"X-Agent-ID": "a", "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    await client.app[GATE].ledger.spend_log.flush()
    lines = (tmp_path / "spend.jsonl").read_text().splitlines()
    records = [strict(line) for line in lines if line]
    assert [r["status"] for r in records if r["event"] == "request"] == [400]
    spend = await client.get("/api/spend", headers={"Authorization": "Bearer adm-" + "7" * 24})
    assert strict(await spend.text())["agents"]["a"]["budget_held"] == 0


IMAGE_URL = "https://example.test/cat.png"
WEB = [{"id": "web", "max_results": 50}]
IMAGE = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE_URL}}]}]
P, C = D("0.000003"), D("0.000015")  # premium's dearest model: sonnet


def first_hold(body: dict[str, Any]) -> int:
    """The prompt tokens a fresh gate holds for `body`: no model calibrated yet."""
    return math.ceil(estimate_prompt(body) * DEFAULT_FACTOR)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # the prompt once, three completions of 10 tokens
        ({"n": 3}, lambda body: P * first_hold(body) + 3 * 10 * C),
        # 50 results at $4 per 1000, and a native search (no web_search price: the default)
        (
            {"plugins": WEB},
            lambda body: P * first_hold(body) + 10 * C + 50 * WEB_RESULT_USD + 5 * WEB_RESULT_USD,
        ),
        # an image by URL: the tokens one image may be billed as, not its URL's bytes
        (
            {"messages": IMAGE},
            lambda body: P * (first_hold(body) + IMAGE_PROMPT_TOKENS) + 10 * C,
        ),
    ],
)
async def test_hold_line_covers_what_the_body_can_cost_end_to_end(
    start_gate, mock, tmp_path: Path, fields: dict[str, Any], expected: Any
) -> None:
    client = await start_gate(make_config(tmp_path, mock.base_url))
    body = chat(max_tokens=10, **fields)
    raw = json.dumps(body).encode()
    resp = await client.post(
        "/v1/chat/completions",
        data=raw,
        headers={"X-Agent-ID": "agent-1", "Content-Type": "application/json"},
    )
    assert resp.status == 200
    await client.app[GATE].ledger.spend_log.flush()
    held = [r["held"] for r in spend_lines(tmp_path / "spend.jsonl") if r["event"] == "hold"]
    assert held[0] == expected(body)


def test_the_execwall_note_to_the_client_never_carries_a_non_finite_number() -> None:
    tier = Tier("only", D(0), ("v/m",))
    call = Call(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        Caller(policy(False), "Bearer x"),
        Admission(tier, ("v/m",), D(1), None, False),
        Hold("req-1", "a", D(1)),
        {},
        0.0,
    )
    # a cost upstream reported past what a float can carry
    note = call.execwall(D("1E+400"), D("-1E+400"))
    assert strict(json.dumps(note))["cost"] is None


def test_config_reads_the_hold_bounds_and_keeps_them_within_what_stays_exact(
    tmp_path: Path,
) -> None:
    cfg = make_config(
        tmp_path,
        "http://127.0.0.1:9/api/v1",
        holds={"max_hold_usd": 250, "max_tokens_ceiling": 64000},
    )
    assert (cfg.holds.max_hold_usd, cfg.holds.max_tokens_ceiling) == (D(250), 64000)
    for bad in ({"max_hold_usd": 2_000_000}, {"max_hold_usd": 0}, {"max_tokens_ceiling": 10**9}):
        with pytest.raises(ConfigError):
            make_config(tmp_path, "http://127.0.0.1:9/api/v1", holds=bad)


PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


@pytest.mark.parametrize(
    ("body", "images"),
    [
        # chat completions: image_url parts
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]}, 1),
        # Anthropic Messages: image blocks, also inside a tool_result
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": PNG}] * 2}]}, 2),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t", "content": [
                                {"type": "text", "text": "the screenshot"},
                                {"type": "image", "source": PNG},
                            ]},
                        ],
                    }
                ]
            },
            1,
        ),
        # the Responses API: input_image parts in an item's content, or as an item
        (
            {"input": [{"role": "user", "content": [
                {"type": "input_text", "text": "what is it?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ]}]},
            1,
        ),
        ({"input": [{"type": "input_image", "image_url": "https://x/y.png"}]}, 1),
        ({"input": "just text"}, 0),
        ({"messages": [{"role": "user", "content": "text"}], "input": None}, 0),
    ],
)  # fmt: skip
def test_images_are_counted_in_every_apis_shape(body: dict, images: int) -> None:
    """An image the hold did not count could cost more than was held at a hard cap."""
    d = read_demand({"model": "openai/gpt-5", **body}, 100, CEILING)
    assert d.body.images == images
