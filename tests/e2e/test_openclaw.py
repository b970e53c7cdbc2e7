"""OpenClaw itself, configured as the README tells a user, against the gate and the mock."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from ..procs import ROOT
from .agents import Run, base_env, cli, run
from .recorder import Recorder
from .stack import AGENT_KEY, ANSWER, MODEL, Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

EXAMPLE = ROOT / "configs" / "examples" / "openclaw.json5"
EXAMPLE_URL = "http://127.0.0.1:8080/v1"
CLEAR_SQL = (
    "UPDATE auth_profile_state SET state_json ="
    " json_remove(state_json, '$.usageStats.\"inline-api-key:{provider}\"')"
)


def write_openclaw_config(home: Path, gate_url: str, provider: str | None = None) -> None:
    """The README's example config, verbatim but for the gate's address (and, when
    given, another provider id)."""
    text = EXAMPLE.read_text()
    assert EXAMPLE_URL in text
    if provider is not None:
        text = text.replace("openrouter", provider)
    (home / ".openclaw").mkdir(parents=True, exist_ok=True)
    (home / ".openclaw" / "openclaw.json").write_text(text.replace(EXAMPLE_URL, gate_url + "/v1"))


def agent_env(home: Path) -> dict[str, str]:
    return base_env(home, EXECWALL_AGENT_KEY=AGENT_KEY)


def clear_billing_lock(home: Path, provider: str) -> None:
    """What the README tells an operator to run: drop OpenClaw's failure state for
    the provider's inline key from the agent's auth state."""
    db = home / ".openclaw" / "agents" / "main" / "agent" / "openclaw-agent.sqlite"
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(CLEAR_SQL.format(provider=provider))


async def turn(home: Path, message: str) -> Run:
    """One headless agent turn in a session that lives on across calls (same HOME)."""
    env = agent_env(home)
    args = [str(cli("openclaw")), "agent", "--local", "--agent", "main"]
    args += ["--session-id", "e2e", "--message", message, "--timeout", "120", "--json"]
    return await run(args, env, home / "work")


def shown(result: Run) -> str:
    """What OpenClaw shows the person: the reply's text, or the error it surfaced."""
    out = json.loads(result.stdout)
    if "payloads" in out:
        return "\n".join(p["text"] for p in out["payloads"] if p.get("text"))
    return str(out["error"]["message"])


def statuses(stack: Stack) -> list[int]:
    return [r["status"] for r in stack.requests()]


async def test_openclaw_turn_through_the_gate(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        recorder = await Recorder(stack.gate.url).start()
        try:
            home = tmp_path / "home"
            write_openclaw_config(home, recorder.url)
            result = await turn(home, "Say hello.")
        finally:
            await recorder.stop()
        assert result.returncode == 0, result.stderr
        assert shown(result) == ANSWER
        assert statuses(stack) == [200]
        await stack.assert_books_exact()
        line = stack.requests()[0]
        assert line["model"] == MODEL and line["stream"] is True

    posts = recorder.posts()
    assert [f"{s.method} {s.path}" for s in recorder.seen] == ["POST /v1/chat/completions"]
    sent = posts[0]
    assert sent.headers["x-agent-id"] == "agent-1"
    assert sent.headers["authorization"] == "Bearer <redacted>"
    body = sent.body
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 8192 and "max_tokens" not in body
    assert body["tools"]
    summary = {
        "path": sent.path,
        "keys": sorted(body),
        "tools": len(body["tools"]),
        "messages": [m["role"] for m in body["messages"]],
        "body_bytes": sent.size,
        "other_calls": [f"{s.method} {s.path}" for s in recorder.seen if s.method != "POST"],
    }
    print("openclaw sent:", json.dumps(summary))


async def test_openclaw_budget_exhausted_mid_session(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        home = tmp_path / "home"
        write_openclaw_config(home, stack.gate.url)
        first = await turn(home, "Say hello.")
        assert first.returncode == 0, first.stderr
        assert shown(first) == ANSWER

        view = await stack.set_spent(5)
        assert view["budget_remaining"] == 0
        refused = await turn(home, "And once more, please.")
        # One user message after the budget ran out: exactly one request reaches the gate,
        # refused with 402, and OpenClaw tells the person it is a billing problem.
        assert statuses(stack) == [200, 402]
        assert refused.returncode != 0
        assert "returned a billing error" in shown(refused)
        assert "run out of credits" in shown(refused)
        assert "reason=billing" in refused.stderr
        assert "decision=surface_error" in refused.stderr
        assert "compaction" not in refused.stderr.lower()
        assert "overflow" not in refused.stderr.lower()
        print("openclaw shows after the 402:", shown(refused))

        # The operator restores the budget: the provider id `openrouter` leaves key state
        # to the upstream, so OpenClaw's very next message goes through.
        await stack.set_spent(0)
        again = await turn(home, "The budget is back.")
        assert again.returncode == 0, again.stderr
        assert shown(again) == ANSWER
        assert statuses(stack) == [200, 402, 200]
        await stack.assert_books_exact()


async def test_openclaw_other_provider_id_is_disabled_locally_after_a_402(
    tmp_path: Path,
) -> None:
    """Under any other provider id OpenClaw disables the key itself after a billing
    error (10 minutes, doubling per repeat): a restored budget does not help until the
    window ends or the operator clears OpenClaw's auth state, as the README says."""
    async with running_stack(tmp_path) as stack:
        home = tmp_path / "home"
        write_openclaw_config(home, stack.gate.url, provider="execwall")
        await stack.set_spent(5)
        refused = await turn(home, "Say hello.")
        assert statuses(stack) == [402]
        assert "returned a billing error" in shown(refused)

        await stack.set_spent(0)
        locked = await turn(home, "The budget is back.")
        assert statuses(stack) == [402]  # nothing reached the gate
        assert "temporarily disabled" in shown(locked)
        print("openclaw shows after the reset:", shown(locked))

        status = await run(
            [str(cli("openclaw")), "models", "status", "--json"], agent_env(home), home / "work"
        )
        unusable = json.loads(status.stdout)["auth"]["unusableProfiles"]
        assert [(u["profileId"], u["reason"]) for u in unusable] == [
            ("inline-api-key:execwall", "billing")
        ]
        assert 0 < unusable[0]["remainingMs"] <= 600_000

        clear_billing_lock(home, "execwall")
        cleared = await turn(home, "The budget is back.")
        assert cleared.returncode == 0, cleared.stderr
        assert shown(cleared) == ANSWER
        assert statuses(stack) == [402, 200]
        await stack.assert_books_exact()
