"""(f) Start-up time against the size of the spend log the gate replays.

The logs are what a busy gate writes: for every request a hold line, for a stream a
second hold line naming the generation, then its request line (a few upstream
failures among them), for the bench's three agents, timestamps within the current
month.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from .world import AGENTS, PREMIUM

_HOLD = (
    '{{"ts":"{ts}","event":"hold","request_id":"{rid}","agent_id":"{agent}",'
    '"held":{held},"tier":"premium"}}\n'
)
_NAMED = (
    '{{"ts":"{ts}","event":"hold","request_id":"{rid}","agent_id":"{agent}",'
    '"held":{held},"generation_id":"{gen}"}}\n'
)
_MODELS = ",".join(f'"{m}"' for m in PREMIUM)
_REQUEST = (
    '{{"request_id":"{rid}","generation_id":{gen},"agent_id":"{agent}","model":{model},'
    '"tier":"premium","models_allowed":[' + _MODELS + '],"stream":{stream},'
    '"status":{status},"prompt_tokens":{prompt},"completion_tokens":{completion},'
    '"cost_source":"{source}","latency_ms":{latency},"ts":"{ts}","event":"request",'
    '"cost":{cost},"budget_remaining":{remaining}}}\n'
)
_PRICE = {  # USD per token (prompt, completion), as the mock prices them
    "anthropic/claude-sonnet-4.5": (3e-06, 1.5e-05),
    "openai/gpt-5": (1.25e-06, 1e-05),
    "google/gemini-2.5-pro": (1.25e-06, 1e-05),
}


def write_spend_log(path: Path, lines: int, now: datetime | None = None) -> int:
    """Write a realistic spend log of about `lines` lines (whole requests only, every
    hold settled); returns the number of lines written."""
    now = now or datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    requests = max(1, lines * 10 // 23)  # 2.3 lines a request on average
    span = min((now - month_start).total_seconds(), 86400.0) * 0.9
    step_ms = max(1, int(span * 1000 / requests))
    start_ms = int(now.timestamp() * 1000) - step_ms * requests
    hexes = secrets.token_hex(16 * 1024)
    seconds_cache: dict[int, str] = {}
    written = 0
    spent = [0.0, 0.0, 0.0]
    chunk: list[str] = []
    with path.open("w") as f:
        index = 0
        while written < lines:
            at_ms = start_ms + index * step_ms
            second, ms = divmod(at_ms, 1000)
            prefix = seconds_cache.get(second)
            if prefix is None:
                seconds_cache.clear()
                prefix = seconds_cache[second] = datetime.fromtimestamp(second, UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S"
                )
            ts = f"{prefix}.{ms:03d}Z"
            slot = index % 1024
            rid = f"req-{hexes[slot * 16 : slot * 16 + 16]}{index:08x}"
            who = index % 3
            agent = AGENTS[who]
            model = PREMIUM[index % 7 % 3]
            stream = index % 10 < 3
            prompt = 40 + index % 900
            completion = 8 + index % 300
            held = round((prompt + 4096) * 1.5e-05, 6)
            gen = f"gen-{second}-{hexes[slot * 12 : slot * 12 + 12]}{index:08x}"
            chunk.append(_HOLD.format(ts=ts, rid=rid, agent=agent, held=held))
            written += 1
            failed = index % 50 == 49
            if stream and not failed:
                chunk.append(_NAMED.format(ts=ts, rid=rid, agent=agent, held=held, gen=gen))
                written += 1
            if failed:
                status, source, cost, gen_field, model_field = 502, "none", 0.0, "null", "null"
                completion_tokens = prompt_tokens = 0
            else:
                price = _PRICE[model]
                cost = round(prompt * price[0] + completion * price[1], 10)
                status, source = 200, "usage"
                gen_field, model_field = f'"{gen}"', f'"{model}"'
                prompt_tokens, completion_tokens = prompt, completion
            spent[who] += cost
            chunk.append(
                _REQUEST.format(
                    rid=rid,
                    gen=gen_field,
                    agent=agent,
                    model=model_field,
                    stream="true" if stream else "false",
                    status=status,
                    prompt=prompt_tokens,
                    completion=completion_tokens,
                    source=source,
                    latency=round(150 + (index * 37) % 4000 + 0.123, 3),
                    ts=ts,
                    cost=cost,
                    remaining=round(1e9 - spent[who], 6),
                )
            )
            written += 1
            index += 1
            if len(chunk) >= 4096:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))
    return written
