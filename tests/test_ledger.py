"""The ledger on its own: holds, settlements, periods, replay and snapshots (real files)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gate.books import ledger as ledger_module
from gate.books.holds import HoldDefaults, HoldRequest
from gate.books.ledger import Ledger
from gate.books.lines import request_line
from gate.books.logscan import last_snapshot_offset, read_records
from gate.books.spendlog import SpendLog
from gate.core import clock as clock_module
from gate.core.cost import ModelPrice
from gate.core.router import Refusal

from .support import make_config

PRICES = {
    m: ModelPrice(Decimal("0.000001"), Decimal("0.000002"))
    for m in ("anthropic/claude-sonnet-4.5", "openai/gpt-5", "google/gemini-2.5-pro")
}
DEFAULTS = HoldDefaults(Decimal("0.00005"), 100)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def policies(tmp_path: Path, **agent_fields):
    from .support import agent

    cfg = make_config(
        tmp_path,
        "http://127.0.0.1:9/api/v1",
        agents={"a": agent(10, **agent_fields), "b": agent(5, period="daily")},
    )
    return cfg.agents


async def open_ledger(tmp_path: Path, clock: Clock, **agent_fields) -> tuple[Ledger, SpendLog]:
    path = tmp_path / "spend.jsonl"
    log = SpendLog(path)
    await log.start()
    ledger = Ledger(policies(tmp_path, **agent_fields), log, clock)
    ledger.replay(read_records(path, last_snapshot_offset(path)))
    return ledger, log


async def spend_once(ledger: Ledger, agent_id: str, rid: str, cost: Decimal) -> None:
    outcome = await ledger.reserve(agent_id, rid, HoldRequest(None, 10, 50), PRICES, DEFAULTS)
    assert not isinstance(outcome, Refusal)
    _, hold = outcome
    ledger.settle(hold, cost, {"status": 200, "cost_source": "usage"})


def state(ledger: Ledger) -> dict:
    return {a: ledger.view(a) for a in ledger.agent_ids()}


async def test_replay_rebuilds_spend_admin_changes_and_open_holds(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 20, 12, tzinfo=UTC))
    ledger, log = await open_ledger(tmp_path, clock)
    await spend_once(ledger, "a", "r1", Decimal("0.5"))
    await ledger.set_budget("b", Decimal("7"), None)
    await spend_once(ledger, "b", "r2", Decimal("0.25"))
    await ledger.reset("a")
    await spend_once(ledger, "a", "r3", Decimal("0.125"))
    outcome = await ledger.reserve("a", "r4", HoldRequest(None, 10, 50), PRICES, DEFAULTS)
    assert not isinstance(outcome, Refusal)
    before = state(ledger)
    await log.close()

    again, log2 = await open_ledger(tmp_path, clock)
    assert state(again) == before
    assert [h.request_id for h in again.open_holds()] == ["r4"]
    assert again.account("a").spent == Decimal("0.125")
    assert again.account("b").budget_total == 7
    await log2.close()


async def test_period_rollover_resets_spend_and_is_replayed(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    ledger, log = await open_ledger(tmp_path, clock)
    await spend_once(ledger, "a", "r1", Decimal("3"))  # monthly
    await spend_once(ledger, "b", "r2", Decimal("1"))  # daily
    clock.now = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    assert ledger.account("a").spent == 0 and ledger.account("b").spent == 0
    await spend_once(ledger, "a", "r3", Decimal("2"))
    await log.close()
    events = [(r["event"], r.get("reason")) for r in read_records(tmp_path / "spend.jsonl")]
    assert ("reset", "period") in events

    again, log2 = await open_ledger(tmp_path, clock)
    assert again.account("a").spent == 2 and again.account("b").spent == 0
    await log2.close()


async def test_snapshots_make_replay_start_late_with_the_same_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "SNAPSHOT_EVERY", 25)
    clock = Clock(datetime(2026, 11, 20, 12, tzinfo=UTC))
    ledger, log = await open_ledger(tmp_path, clock)
    rng = random.Random(3)
    for i in range(60):
        agent_id = rng.choice(["a", "b"])
        if rng.random() < 0.1:
            await ledger.set_budget(agent_id, Decimal(rng.randint(5, 20)), None)
        await spend_once(ledger, agent_id, f"r{i}", Decimal(rng.randint(1, 999)) / 100000)
    outcome = await ledger.reserve("a", "open", HoldRequest(None, 10, 50), PRICES, DEFAULTS)
    assert not isinstance(outcome, Refusal)
    before = state(ledger)
    await log.close()

    path = tmp_path / "spend.jsonl"
    offset = last_snapshot_offset(path)
    assert offset > 0
    assert path.read_bytes()[offset:].startswith(b'{"event":"snapshot"')
    tail = list(read_records(path, offset))
    assert len(tail) < 60  # replay reads only the tail
    again, log2 = await open_ledger(tmp_path, clock)
    assert state(again) == before
    assert [h.request_id for h in again.open_holds()] == ["open"]
    await log2.close()


async def test_admin_budget_total_survives_reload_until_config_changes(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 20, tzinfo=UTC))
    ledger, log = await open_ledger(tmp_path, clock)
    await ledger.set_budget("a", Decimal("99"), None)
    ledger.apply_policies(policies(tmp_path))
    assert ledger.account("a").budget_total == 99
    changed = dict(policies(tmp_path))
    changed["a"] = replace(changed["a"], budget_total=Decimal("12"))
    ledger.apply_policies(changed)
    assert ledger.account("a").budget_total == 12
    await log.close()


def test_snapshot_offset_of_a_log_without_one_is_zero(tmp_path: Path) -> None:
    path = tmp_path / "spend.jsonl"
    assert last_snapshot_offset(path) == 0
    path.write_bytes(b'{"event":"request"}\n' * 10)
    assert last_snapshot_offset(path) == 0
    path.write_bytes(b'{"event":"snapshot","agents":{}}\n{"event":"request"}\n')
    assert last_snapshot_offset(path) == 0
    lines = [b'{"event":"request","i":%d}\n' % i for i in range(200_000)]
    path.write_bytes(
        b"".join(lines[:100]) + b'{"event":"snapshot","agents":{}}\n' + b"".join(lines)
    )
    assert last_snapshot_offset(path) == sum(map(len, lines[:100]))


def test_iso_timestamps_are_utc_with_z() -> None:
    assert clock_module.iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"
    assert clock_module.parse_ts("2026-01-02T03:04:05.000Z") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert clock_module.parse_ts("garbage") is None
    assert clock_module.parse_ts(5) is None


def test_snapshot_offset_passes_over_torn_snapshots(tmp_path: Path) -> None:
    """Issue 12 #1: only a whole snapshot that parses is where replay may start."""
    path = tmp_path / "spend.jsonl"
    good = b'{"event":"snapshot","agents":{"a":{"spent":1}},"holds":{}}\n'
    torn = b'{"event":"snapshot","agents":{"a":{"spe'
    request = b'{"event":"request","agent_id":"a","cost":0.5}\n'
    path.write_bytes(request + torn)  # the stop's snapshot, torn: none is whole
    assert last_snapshot_offset(path) == 0
    path.write_bytes(request + good + request + torn + b"\n" + request + torn)
    assert last_snapshot_offset(path) == len(request)  # the one before both torn ones
    not_one = b'{"event":"snapshot","agents":[]}\n'
    path.write_bytes(request + good + not_one)
    assert last_snapshot_offset(path) == len(request)
    path.write_bytes(good + request + torn)
    assert last_snapshot_offset(path) == 0


async def test_replay_over_a_torn_snapshot_keeps_every_request(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 20, 12, tzinfo=UTC))
    ledger, log = await open_ledger(tmp_path, clock)
    await spend_once(ledger, "a", "r1", Decimal("0.25"))
    ledger.write_snapshot()
    await spend_once(ledger, "a", "r2", Decimal("0.5"))
    ledger.write_snapshot()
    await log.close()
    path = tmp_path / "spend.jsonl"
    raw = path.read_bytes()
    path.write_bytes(raw[:-20])  # the last snapshot torn
    again, log2 = await open_ledger(tmp_path, clock)
    assert again.account("a").spent == Decimal("0.75")
    await log2.close()


async def test_replay_tells_holds_never_sent_from_holds_maybe_sent(tmp_path: Path) -> None:
    """Issue 12 #5: a hold line that promised a send mark, without the mark, was never
    sent; with the mark, or from a log written before marks (no `sent`), it may have
    been. Snapshots keep the difference."""
    clock = Clock(datetime(2026, 11, 20, 12, tzinfo=UTC))
    ledger, log = await open_ledger(tmp_path, clock)
    ledger.marks_sends = True
    held = {}
    for rid in ("quiet", "sent", "snap-quiet"):
        outcome = await ledger.reserve("a", rid, HoldRequest(None, 10, 50), PRICES, DEFAULTS)
        assert not isinstance(outcome, Refusal)
        held[rid] = outcome[1]
    mark = ledger.mark_sent(held["sent"])
    assert mark is not None
    await mark
    assert ledger.mark_sent(held["sent"]) is None  # once
    ledger.write_snapshot()
    log.append({"event": "hold", "request_id": "old", "agent_id": "a", "held": 0.1})
    await log.close()
    again, log2 = await open_ledger(tmp_path, clock)
    sent = {h.request_id: h.sent for h in again.open_holds()}
    assert sent == {"quiet": False, "sent": True, "snap-quiet": False, "old": None}
    await log2.close()


def test_carry_accounts_keeps_resumes_starts_and_sets_dormant(tmp_path: Path) -> None:
    """The reload rule every store shares (gate.books.accounts.carry_accounts): a kept
    agent keeps its spend and takes the new policy, a removed one turns dormant, and
    one added back resumes its dormant account instead of starting at zero."""
    from gate.books.accounts import carry_accounts, new_account

    now = datetime(2026, 11, 20, tzinfo=UTC)
    agents = dict(policies(tmp_path))
    first, second = sorted(agents)[:2]
    current = {aid: new_account(p, now) for aid, p in agents.items()}
    current[first].spent = Decimal("3")
    current[second].spent = Decimal("4")
    dormant: dict = {}
    without_second = {a: p for a, p in agents.items() if a != second}
    without_second[first] = replace(agents[first], budget_total=Decimal("12"))
    accounts, carried = carry_accounts(current, dormant, without_second, now)
    assert set(accounts) == set(without_second) and list(dormant) == [second]
    assert accounts[first] is current[first] and accounts[first].spent == 3
    assert accounts[first].policy.budget_total == 12
    assert carried == [current[a] for a in without_second]
    back, carried = carry_accounts(accounts, dormant, agents, now)
    assert back[second].spent == 4 and dormant == {}
    assert back[second] in carried


async def test_held_is_the_sum_of_the_open_holds_through_any_interleaving(tmp_path: Path) -> None:
    """`held` is kept as holds open and close (not summed over every open hold on each
    change): whatever order 200 holds of two agents open, settle and get cancelled in,
    and across a replay of the log, each agent's held equals the sum of its open holds."""
    clock = Clock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    ledger, log = await open_ledger(tmp_path, clock)
    rng = random.Random(16)
    opened = []
    for i in range(200):
        agent_id = rng.choice("ab")
        ask = HoldRequest(None, rng.randint(1, 400), rng.randint(1, 90))
        outcome = await ledger.reserve(agent_id, f"r{i}", ask, PRICES, DEFAULTS)
        if not isinstance(outcome, Refusal):
            opened.append(outcome[1])
        if opened and rng.random() < 0.45:
            hold = opened.pop(rng.randrange(len(opened)))
            ledger.settle(hold, hold.amount / rng.randint(1, 7), request_line(hold.request_id))
        for agent_id in "ab":
            acct = ledger.account(agent_id)
            assert acct is not None
            expected = sum((h.amount for h in opened if h.agent_id == agent_id), Decimal(0))
            assert acct.held == expected
    assert opened, "some holds are still open"
    await log.close()
    again, log = await open_ledger(tmp_path, clock)
    for agent_id in "ab":
        acct = again.account(agent_id)
        assert acct is not None
        assert acct.held == sum((h.amount for h in opened if h.agent_id == agent_id), Decimal(0))
    await log.close()
