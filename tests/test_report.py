"""`python -m gate report` and `check-config`: totals equal a direct sum over the log."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from gate.cli import report

from .support import raw_config, write_config

ROOT = Path(__file__).resolve().parent.parent


def fake_log(path: Path, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lines = []
    with path.open("w") as f:
        for i in range(n):
            refused = rng.random() < 0.2
            line = {
                "ts": f"2026-11-{rng.randint(1, 28):02d}T10:00:00.000Z",
                "event": "request",
                "request_id": f"r{seed}-{i}",
                "agent_id": rng.choice(["a", "b", "c"]),
                "model": None if refused else rng.choice(["m/x", "m/y"]),
                "tier": rng.choice(["premium", "mid"]),
                "status": 402 if refused else 200,
                "prompt_tokens": 0 if refused else rng.randint(1, 500),
                "completion_tokens": 0 if refused else rng.randint(1, 500),
                "cost": 0 if refused else float(Decimal(rng.randint(1, 10**6)) / 10**9),
            }
            lines.append(line)
            f.write(json.dumps({"event": "hold", "request_id": line["request_id"]}) + "\n")
            f.write(json.dumps(line) + "\n")
    return lines


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_report_totals_equal_a_direct_sum_over_rotated_logs(tmp_path: Path) -> None:
    old, new = tmp_path / "spend.jsonl.1", tmp_path / "spend.jsonl"
    lines = fake_log(old, 300, 1) + fake_log(new, 200, 2)
    done = run("report", "--log", str(old), "--log", str(new), "--by", "agent", "--format", "json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for agent_id in ("a", "b", "c"):
        mine = [x for x in lines if x["agent_id"] == agent_id]
        group = out["groups"][agent_id]
        assert group["requests"] == len(mine)
        assert group["refused"] == sum(1 for x in mine if x["status"] == 402)
        assert Decimal(group["usd"]) == sum(Decimal(str(x["cost"])) for x in mine)
        assert group["completion_tokens"] == sum(x["completion_tokens"] for x in mine)
    assert Decimal(out["total"]["usd"]) == sum(Decimal(str(x["cost"])) for x in lines)


def test_report_filters_and_formats(tmp_path: Path) -> None:
    log = tmp_path / "spend.jsonl"
    lines = fake_log(log, 200, 3)
    done = run(
        "report",
        "--log",
        str(log),
        "--since",
        "2026-11-15",
        "--agent",
        "b",
        "--by",
        "day",
        "--format",
        "csv",
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    expected = [x for x in lines if x["agent_id"] == "b" and x["ts"] >= "2026-11-15"]
    assert rows[-1]["day"] == "TOTAL" and int(rows[-1]["requests"]) == len(expected)
    assert all(r["day"] >= "2026-11-15" for r in rows[:-1])
    table = run("report", "--log", str(log), "--by", "model").stdout
    assert table.splitlines()[0].split() == [
        "model",
        "requests",
        "refused",
        "prompt_tokens",
        "completion_tokens",
        "usd",
    ]


def test_summarise_keeps_one_total_per_group() -> None:
    lines = ({"agent_id": "a", "cost": 0.5, "status": 200} for _ in range(100_000))
    groups = report.summarise(lines, "agent")  # a generator: nothing is held but totals
    assert list(groups) == ["a"] and groups["a"].requests == 100_000


def test_report_by_api_counts_lines_without_the_field_as_chat() -> None:
    lines = [
        {"api": "chat", "cost": 0.25, "status": 200},
        {"cost": 0.5, "status": 200},  # written before lines named their API: chat
        {"api": "responses", "cost": 0.125, "status": 200},
        {"api": "responses", "cost": 0, "status": 402},
    ]
    groups = report.summarise(lines, "api")
    assert list(groups) == ["chat", "responses"]
    assert (groups["chat"].requests, groups["chat"].usd) == (2, Decimal("0.75"))
    assert (groups["responses"].requests, groups["responses"].refused) == (2, 1)
    assert groups["responses"].usd == Decimal("0.125")


def test_check_config(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.yaml", raw_config(tmp_path, "http://127.0.0.1:9/api/v1"))
    done = run("check-config", str(good))
    assert done.returncode == 0 and "ok" in done.stdout
    assert "sk-or" not in done.stdout  # says whether the key is set, never the key
    raw = raw_config(tmp_path, "not a url")
    bad = write_config(tmp_path / "bad.yaml", raw)
    done = run("check-config", str(bad))
    assert done.returncode == 2
    assert "cost_routing.openrouter.base_url" in done.stderr


def test_check_config_warns_of_the_older_budget_source_spelling(tmp_path: Path) -> None:
    raw = raw_config(tmp_path, "http://127.0.0.1:9/api/v1")
    raw["cost_routing"]["agents"]["agent-1"]["budget_source"] = "config"
    done = run("check-config", str(write_config(tmp_path / "old.yaml", raw)))
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "gate: warning: cost_routing.agents.agent-1.budget_source: "
        "'config' is an older spelling of 'local'; write local"
    ]
