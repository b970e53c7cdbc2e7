"""`make demo`: replay the walkthrough of SPEC.md against mock_upstream, no key, no network.

Starts mock_upstream and the gate (configs/policy.yaml) on loopback, walks agent-1 through
premium -> mid -> economy -> 402 -> reset -> premium, and prints for each step the tier
chosen, the models allowed, what went upstream (from the mock's request log) and the spend.
Everything the run writes stays in a temp folder that is printed at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp_sse_client import client as sse_client

REPO = Path(__file__).resolve().parent.parent
AGENT = "agent-1"
ADMIN_TOKEN = "demo-admin-token"  # noqa: S105 - a throwaway token for this run only
PLACEHOLDER_KEY = "sk-or-demo-not-a-real-key"
CONSOLE_KEY = "demo-console-key"  # the mock console's key, for this run only
# policy.yaml requires agent keys, each from its own variable: throwaway ones for this run
AGENT_KEYS = {
    "AGENT_1_API_KEY": "demo-agent-1-key",
    "AGENT_2_API_KEY": "demo-agent-2-key",
    "DEFAULT_AGENT_API_KEY": "demo-default-key",
}
AGENT_HEADERS = {"X-Agent-ID": AGENT, "Authorization": f"Bearer {AGENT_KEYS['AGENT_1_API_KEY']}"}
CONSOLE_SYNC_SECONDS = "0.2"
START_TIMEOUT = 20.0
PAD = " " * 8
ASKED = "openai/gpt-5"  # the client's own choice: kept first when the tier has it


class DemoError(Exception):
    """A step did not behave as the walkthrough says."""


@dataclass(frozen=True)
class Step:
    action: str  # "get" | "set" | "reset"
    spent: float | None
    expect: str  # a tier name, or "402"
    stream: bool


STEPS = [
    Step("get", None, "premium", stream=False),
    Step("set", 20, "mid", stream=True),
    Step("set", 40, "economy", stream=False),
    Step("set", 50, "402", stream=False),
    Step("reset", None, "premium", stream=True),
]


async def start(name: str, args: list[str], env: dict[str, str], err: Path) -> tuple[Any, str]:
    """Start `python -m <name> ...`; return the process and the URL from its listening line."""
    with err.open("wb") as err_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            name,
            *args,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=err_file,
        )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)).decode()
    except TimeoutError:
        line = ""
    if " listening on " not in line:
        await stop(proc)
        raise DemoError(f"{name} did not start; last of {err}:\n{tail(err)}")
    return proc, line.rsplit(" ", 1)[-1].strip()


async def stop(proc: Any) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(empty)"
    return "\n".join(PAD + line for line in text.splitlines()[-lines:])


def usd(amount: float) -> str:
    """A JSON float as the exact decimal it was written as (no rounding to 6 places)."""
    return f"{Decimal(str(amount)):f}"


def chat_lines(request_log: Path) -> list[dict[str, Any]]:
    """The mock's logged chat-completion requests (it also logs /models GETs)."""
    if not request_log.exists():
        return []
    rows = [json.loads(line) for line in request_log.read_text().splitlines() if line.strip()]
    return [r for r in rows if str(r.get("path", "")).endswith("/chat/completions")]


async def admin(http: aiohttp.ClientSession, gate: str, step: Step) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if step.action == "set":
        spent = {"budget_spent": step.spent}
        call = http.post(f"{gate}/api/budget/{AGENT}", json=spent, headers=auth)
    elif step.action == "reset":
        call = http.post(f"{gate}/api/reset/{AGENT}", headers=auth)
    else:
        call = http.get(f"{gate}/api/spend/{AGENT}", headers=auth)
    async with call as resp:
        if resp.status != 200:
            raise DemoError(f"admin {step.action} answered {resp.status}: {await resp.text()}")
        view: dict[str, Any] = await resp.json()
        return view


Answer = tuple[int, dict[str, Any], str]


async def chat(http: aiohttp.ClientSession, gate: str, stream: bool) -> Answer:
    """One chat completion as agent-1: (status, body or final usage chunk, note)."""
    body: dict[str, Any] = {
        "model": ASKED,
        "messages": [{"role": "user", "content": "Say hello to the budget."}],
        "max_tokens": 64,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    url = f"{gate}/v1/chat/completions"
    if not stream:
        async with http.post(url, json=body, headers=AGENT_HEADERS) as resp:
            return resp.status, await resp.json(), ""
    # Streams are read by aiohttp-sse-client, an EventSource independent of the gate. It
    # reconnects (a second, billed POST) when a stream ends, so stop at [DONE].
    usage_chunk: dict[str, Any] = {}
    events = content = 0
    done = False
    source = sse_client.EventSource(
        url, option={"method": "POST"}, session=http, json=body, headers=AGENT_HEADERS
    )
    async with source:
        async for event in source:
            if event.data == "[DONE]":
                done = True
                break
            events += 1
            chunk = json.loads(event.data)
            if chunk.get("choices"):
                content += 1
            if "_execwall" in chunk:
                usage_chunk = chunk
    if not done or not usage_chunk:
        missing = "[DONE]" if not done else "the usage chunk with _execwall"
        raise DemoError(f"stream ended without {missing}")
    return 200, usage_chunk, f"{events} SSE events ({content} with content), then [DONE]"


async def run_step(
    n: int, step: Step, http: aiohttp.ClientSession, gate: str, req_log: Path
) -> int:
    view = await admin(http, gate, step)
    total, spent = view["budget_total"], view["budget_spent"]
    what = {"get": "budget_spent is", "set": "budget_spent set to", "reset": "reset: budget_spent"}
    print(
        f"\nstep {n}  {what[step.action]} {spent:.2f} of {total:.2f} "
        f"({view['remaining_fraction']:.0%} left)"
    )
    before = len(chat_lines(req_log))
    status, answer, note = await chat(http, gate, step.stream)
    sent = chat_lines(req_log)[before:]
    kind = "streaming" if step.stream else "non-streaming"
    if step.expect == "402":
        error = answer.get("error", {})
        print(f"{PAD}request        {kind}, model {ASKED} -> HTTP {status}")
        print(f"{PAD}refused        {error.get('message')} (type {error.get('type')})")
        print(
            f"{PAD}sent upstream  nothing (chat lines in openrouter_requests.log: "
            f"{before} before, {before + len(sent)} after)"
        )
        if status != 402 or sent:
            raise DemoError(f"expected 402 and nothing upstream, got {status}, {len(sent)} sent")
        return status
    if status != 200:
        raise DemoError(f"expected 200, got {status}: {answer}")
    info = answer["_execwall"]
    print(f"{PAD}request        {kind}, model {ASKED}" + (f"; {note}" if note else ""))
    print(f"{PAD}tier chosen    {info['tier']}")
    print(f"{PAD}models allowed {', '.join(info['models_allowed'])}")
    if len(sent) != 1:
        raise DemoError(f"expected one request upstream, the mock logged {len(sent)}")
    upstream_models = sent[0]["body"].get("models") or []
    print(f"{PAD}sent upstream  models={upstream_models}  (from openrouter_requests.log)")
    remaining = info["budget_remaining"]
    print(
        f"{PAD}answered by    {answer.get('model')}   cost ${usd(info['cost'])}   "
        f"remaining ${usd(remaining)}"
    )
    if info["tier"] != step.expect:
        raise DemoError(f"expected tier {step.expect}, the gate chose {info['tier']}")
    if sorted(upstream_models) != sorted(info["models_allowed"]):
        raise DemoError(f"sent upstream {upstream_models}, not the tier's models")
    expected_first = ASKED if ASKED in upstream_models else info["models_allowed"][0]
    if upstream_models[0] != expected_first or sent[0]["body"].get("model") != expected_first:
        raise DemoError(f"expected {expected_first} first upstream, got {upstream_models[0]}")
    return status


async def console_and_alerts(http: aiohttp.ClientSession, gate: str, mock_url: str) -> None:
    """What the JetPatch console (mock_upstream's console mode) received, and the alerts
    the walkthrough raised (no webhook in the demo: they are listed at /api/alerts)."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get(f"{gate}/api/spend/{AGENT}", headers=auth) as resp:
        spent = (await resp.json())["budget_spent"]
    for _ in range(100):  # the gate posts a snapshot every CONSOLE_SYNC_SECONDS
        async with http.get(f"{mock_url}/_mock/console") as resp:
            seen = await resp.json()
        last = seen["snapshots"][-1]["agents"][AGENT] if seen["snapshots"] else {}
        if last.get("budget_spent") == spent:
            break
        await asyncio.sleep(0.1)
    else:
        raise DemoError("the console never received the current spend")
    async with http.get(f"{gate}/api/health") as resp:
        console = (await resp.json())["console"]
    print("\nconsole sync   (mock_upstream's console mode, every " + CONSOLE_SYNC_SECONDS + " s)")
    print(
        f"{PAD}POST /api/gate/spend   {seen['spend_calls']} snapshots; the last has {AGENT} "
        f"at ${usd(spent)} spent, as /api/spend says"
    )
    print(
        f"{PAD}GET /api/gate/budgets  {seen['budget_calls']} times "
        f"(budgets apply to budget_source: jetpatch agents; policy.yaml has none)"
    )
    print(f"{PAD}/api/health console   {console['consecutive_failures']} failures in a row")
    async with http.get(f"{gate}/api/alerts", headers=auth) as resp:
        alerts = (await resp.json())["alerts"]
    print("\nalerts         (no webhook set: listed at /api/alerts, newest last)")
    for alert in reversed(alerts):
        print(f"{PAD}{alert['kind']:<16} {alert['message']}")
    if console["consecutive_failures"] or not alerts:
        raise DemoError("the console sync failed or the walkthrough raised no alert")


def summarise(statuses: list[int], spend_log: Path, mock: dict[str, Any], work: Path) -> None:
    rows = [json.loads(line, parse_float=Decimal) for line in spend_log.read_text().splitlines()]
    requests = [r for r in rows if r.get("event") == "request"]
    logged = sum((Decimal(r["cost"] or 0) for r in requests), Decimal(0))
    charged = Decimal(mock["total_charged_str"])
    ok = logged == charged
    print("\nsummary")
    print(
        f"{PAD}requests       {len(statuses)} sent, {statuses.count(200)} answered, "
        f"{statuses.count(402)} refused; {len(requests)} request lines in the spend log"
    )
    print(f"{PAD}spend log      ${logged:f} (sum of request-line costs)")
    print(f"{PAD}mock charged   ${charged:f} over {mock['chat_requests']} chat requests")
    print(f"{PAD}books          {'match' if ok else 'DO NOT MATCH'}")
    log = shlex.quote(str(spend_log))
    print(f"\nfiles kept in {work}  (spend.jsonl, openrouter_requests.log, gate.err, mock.err)")
    print("try:")
    print(f"  jq -c 'select(.event==\"request\") | {{tier, model, status, cost}}' {log}")
    print(
        f'  jq -s \'map(select(.event=="request")) | group_by(.agent_id) | '
        f"map({{agent: .[0].agent_id, usd: (map(.cost) | add)}})' {log}"
    )
    print(f'  jq -c \'select(.event=="budget" or .event=="reset")\' {log}')
    if not ok or len(requests) != len(statuses):
        raise DemoError("the spend log and the mock's charges disagree")


async def demo(work: Path) -> None:
    req_log, spend_log = work / "openrouter_requests.log", work / "spend.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "ALERT_WEBHOOK_URL")}
    mock, mock_url = await start(
        "mock_upstream", ["--port", "0", "--log", str(req_log)], env, work / "mock.err"
    )
    gate_proc = None
    try:
        async with aiohttp.ClientSession() as http:  # the mock's console wants this key
            await http.post(f"{mock_url}/_mock/console", json={"expected_key": CONSOLE_KEY})
        gate_env = env | {
            "OPENROUTER_API_KEY": PLACEHOLDER_KEY,
            "OPENROUTER_BASE_URL": f"{mock_url}/api/v1",
            "SPEND_LOG": str(spend_log),
            "GATE_ADMIN_TOKEN": ADMIN_TOKEN,
            "JETPATCH_SYNC": "true",
            "JETPATCH_URL": mock_url,
            "JETPATCH_API_KEY": CONSOLE_KEY,
            "JETPATCH_SYNC_SECONDS": CONSOLE_SYNC_SECONDS,
            **AGENT_KEYS,
        }
        gate_args = ["--config", "configs/policy.yaml", "--host", "127.0.0.1", "--port", "0"]
        gate_proc, gate = await start("gate", gate_args, gate_env, work / "gate.err")
        print(f"mock_upstream  {mock_url}\ngate           {gate}  (configs/policy.yaml)")
        print(f"{AGENT}        tiers: premium > 80% left, mid > 30%, economy > 0%")
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            statuses = []
            try:
                for n, step in enumerate(STEPS, 1):
                    statuses.append(await run_step(n, step, http, gate, req_log))
                await console_and_alerts(http, gate, mock_url)
            except (DemoError, aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                gate_err = tail(work / "gate.err")
                raise DemoError(f"{exc}\n{PAD}gate stderr (last lines):\n{gate_err}") from exc
            async with http.get(f"{mock_url}/_mock/stats") as resp:
                stats = await resp.json()
        summarise(statuses, spend_log, stats, work)
    finally:
        if gate_proc is not None:
            await stop(gate_proc)
        await stop(mock)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="execwall-demo-"))
    try:
        asyncio.run(demo(work))
    except DemoError as exc:
        print(f"\ndemo FAILED: {exc}\n(files kept in {work})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
