"""Fuzz the running gate against its own OpenAPI description (`GET /openapi.json`).

schemathesis generates valid and invalid requests for every operation; the gate and the
mock upstream run as real processes. Whatever arrives: no 5xx, no crash, every error in
the one shape, every answer as documented, and no secret in any of them. Bounded: a few
hundred cases in all, a fixed seed, well under a minute.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.transport import Response

from .support import agent, raw_config, write_config

ROOT = Path(__file__).resolve().parent.parent
CASES_PER_OPERATION = 24  # x 15 operations x 2 modes: a few hundred requests in all
ADMIN_TOKEN = "adm-" + secrets.token_hex(16)
UPSTREAM_KEY = "sk-or-v1-" + secrets.token_hex(32)
AGENT_KEY = "agent-key-" + secrets.token_hex(16)
SECRETS = (ADMIN_TOKEN, UPSTREAM_KEY, AGENT_KEY)


def spawn(args: list[str], stderr: IO[bytes], env: dict[str, str]) -> tuple[Any, str]:
    """`python -m <args>`; its URL once it prints 'listening on URL'."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        cwd=ROOT,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline().decode() if ready else ""
    if "listening on " not in line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{args[0]} did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def stop(proc: Any) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return int(proc.wait(timeout=30))
    except subprocess.TimeoutExpired:
        proc.kill()
        return int(proc.wait())
    finally:
        proc.stdout.close()


@pytest.fixture(scope="module")
def gate_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with (tmp / "mock.stderr").open("ab") as mock_err, (tmp / "gate.stderr").open("ab") as err:
        mock, mock_url = spawn(
            ["mock_upstream", "--port", "0", "--log", str(tmp / "requests.log")], mock_err, {}
        )
        raw = raw_config(
            tmp,
            mock_url + "/api/v1",
            agents={
                "agent-1": agent(1000),
                "default": agent(1000, hard_cap=False),
                "agent-2": agent(1000, api_key=AGENT_KEY),
            },
            openrouter={"api_key": "${OPENROUTER_API_KEY}"},
        )
        config = write_config(tmp / "gate.yaml", raw)
        env = {"OPENROUTER_API_KEY": UPSTREAM_KEY, "GATE_ADMIN_TOKEN": ADMIN_TOKEN}
        try:
            gate, url = spawn(["gate", "--config", str(config), "--port", "0"], err, env)
        except BaseException:
            stop(mock)
            raise
        try:
            yield url
        finally:
            gate_code = stop(gate)
            stop(mock)
    logs = (tmp / "gate.stderr").read_text() + (tmp / "spend.jsonl").read_text()
    assert gate_code == 0, logs[-3000:]  # no crash: it stopped cleanly when asked
    assert "Traceback" not in logs, logs[-3000:]
    for secret in SECRETS:
        assert secret not in logs


def error_shape(ctx: Any, response: Response, case: Any) -> bool | None:
    """Every error is `{"error": {"message", "type", "code": <status>}}`; no secret
    appears in any answer."""
    text = response.content.decode("utf-8", "replace") if response.content else ""
    for secret in SECRETS:
        assert secret not in text, "a secret in an answer"
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), text
    body = json.loads(text)
    if case.path == "/api/health":  # degraded health is a 503 with the health body
        return None
    if case.path.endswith("/v1/messages"):  # Anthropic's shape, its type for the status
        assert body["type"] == "error" and set(body) == {"type", "error"}, text
        assert body["error"]["type"] and body["error"]["message"], text
        return None
    assert set(body) == {"error"}, text
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"], text
    assert isinstance(error["type"], str) and error["type"], text
    assert error["code"] == response.status_code, text
    return None


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    error_shape,
]


def fuzz(operation: Any, mode: GenerationMode, url: str, statuses: dict[int, int]) -> None:
    """Up to CASES_PER_OPERATION cases of one operation, each with or without the admin
    token and, for /v1, as one of the configured agents (keyed or not) or as none."""

    @seed(20261123)
    @settings(
        max_examples=CASES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        token=st.booleans(),
        agent_id=st.sampled_from([None, "agent-1", "default", "agent-2"]),
    )
    def run(case: Any, token: bool, agent_id: str | None) -> None:
        headers = dict(case.headers or {})
        if token:
            headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        if agent_id is not None and case.path.startswith("/v1/"):
            headers["X-Agent-ID"] = agent_id
        case.headers = headers
        response = case.call(base_url=url, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except Unsatisfiable:  # an operation with nothing that can be made invalid
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_fuzz_the_running_gate(gate_url: str) -> None:
    schema = schemathesis.openapi.from_url(gate_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    statuses: dict[int, int] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, gate_url, statuses)
    # It reached past the front door: answers, refusals and validation errors alike.
    assert statuses.get(200, 0) > 20, statuses
    assert statuses.get(400, 0) > 5 and statuses.get(401, 0) > 5, statuses
    assert sum(statuses.values()) >= 300, statuses
