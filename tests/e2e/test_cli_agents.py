"""Claude Code and Codex CLI, configured as their users configure them, against the gate.

Claude Code speaks Anthropic's Messages API (`ANTHROPIC_BASE_URL` at the gate's root, the
agent key as `ANTHROPIC_AUTH_TOKEN`); Codex the Responses API (a custom provider whose
`base_url` is the gate's `/v1`). Each answers its user, and the books equal the mock's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .agents import Run, base_env, cli, run
from .recorder import Recorder
from .stack import AGENT, AGENT_KEY, ANSWER, MODEL, Stack, running_stack

pytestmark = pytest.mark.e2e


def report(name: str, result: Run, recorder: Recorder, stack: Stack) -> None:
    calls = [f"{s.method} {s.path} -> {s.status}" for s in recorder.seen]
    print(f"{name} exit {result.returncode}; sent {calls}")
    print(f"{name} stdout: {result.stdout.strip()[-1500:]}")
    print(f"{name} stderr: {result.stderr.strip()[-1500:]}")
    print(f"{name} spend-log statuses: {[r['status'] for r in stack.requests()]}")


async def claude(home: Path, gate_url: str) -> Run:
    env = base_env(
        home,
        ANTHROPIC_BASE_URL=gate_url,
        ANTHROPIC_AUTH_TOKEN=AGENT_KEY,
        ANTHROPIC_API_KEY="",
        ANTHROPIC_CUSTOM_HEADERS=f"X-Agent-ID: {AGENT}",
        ANTHROPIC_MODEL=MODEL,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
    )
    args = [str(cli("claude")), "-p", "Say hello.", "--output-format", "text"]
    return await run(args, env, home / "work", timeout=90)


def write_codex_config(home: Path, gate_url: str) -> None:
    (home / ".codex").mkdir(parents=True, exist_ok=True)
    (home / ".codex" / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        'model_provider = "gate"\n'
        "\n"
        "[analytics]\n"
        "enabled = false\n"
        "\n"
        "[model_providers.gate]\n"
        'name = "Execwall OR Gate"\n'
        f'base_url = "{gate_url}/v1"\n'
        'env_key = "EXECWALL_AGENT_KEY"\n'
        'wire_api = "responses"\n'
        f'http_headers = {{ "X-Agent-ID" = "{AGENT}" }}\n'
    )


async def codex(home: Path, gate_url: str) -> Run:
    write_codex_config(home, gate_url)
    env = base_env(home, EXECWALL_AGENT_KEY=AGENT_KEY, CODEX_HOME=str(home / ".codex"))
    args = [str(cli("codex")), "exec", "--skip-git-repo-check", "Say hello."]
    return await run(args, env, home / "work", timeout=150)


@pytest.mark.timeout(150)
async def test_claude_code_print_mode(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        recorder = await Recorder(stack.gate.url).start()
        try:
            result = await claude(tmp_path / "home", recorder.url)
        finally:
            await recorder.stop()
        report("claude", result, recorder, stack)
        posts = recorder.posts()
        assert posts and all(p.path.startswith("/v1/messages") for p in posts)
        assert result.returncode == 0
        assert ANSWER in result.stdout
        await stack.assert_books_exact()


@pytest.mark.timeout(200)
async def test_codex_exec(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        recorder = await Recorder(stack.gate.url).start()
        try:
            result = await codex(tmp_path / "home", recorder.url)
        finally:
            await recorder.stop()
        report("codex", result, recorder, stack)
        posts = recorder.posts()
        assert posts and all(p.path == "/v1/responses" for p in posts)
        body = posts[0].body
        print(
            "codex sent:",
            json.dumps({k: body[k] for k in body if k not in ("input", "tools", "instructions")}),
        )
        assert result.returncode == 0
        assert ANSWER in result.stdout
        await stack.assert_books_exact()


@pytest.mark.timeout(150)
async def test_claude_code_stops_at_a_budget_refusal(tmp_path: Path) -> None:
    """Exhausted: one request reaches the gate (the Anthropic SDK honours
    `x-should-retry: false`), and Claude Code tells its user the credits are gone."""
    async with running_stack(tmp_path) as stack:
        await stack.set_spent(5)
        result = await claude(tmp_path / "home", stack.gate.url)
        print(f"claude exit {result.returncode}; stdout {result.stdout.strip()[-600:]!r}")
        print(f"claude stderr {result.stderr.strip()[-600:]!r}")
        assert [r["status"] for r in stack.requests()] == [402]
        assert result.returncode != 0
        shown = (result.stdout + result.stderr).lower()
        assert "budget exhausted" in shown and "credits" in shown
        assert await stack.mock_charged() == 0


@pytest.mark.timeout(200)
async def test_codex_stops_at_a_budget_refusal(tmp_path: Path) -> None:
    """Exhausted: Codex retries a 402 five times, so it is told its usage limit (a 429
    `usage_limit_reached`), the one refusal it stops at: one request, one line."""
    async with running_stack(tmp_path) as stack:
        await stack.set_spent(5)
        result = await codex(tmp_path / "home", stack.gate.url)
        statuses = [r["status"] for r in stack.requests()]
        print(f"codex exit {result.returncode}; statuses {statuses}")
        print(f"codex stderr {result.stderr.strip()[-800:]!r}")
        assert statuses == [402]  # one request: told its usage limit, Codex does not retry
        assert [r.get("client_status") for r in stack.requests()] == [429]
        assert result.returncode != 0
        assert "usage limit" in result.stdout + result.stderr
        assert await stack.mock_charged() == 0
