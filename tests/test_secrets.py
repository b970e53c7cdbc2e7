"""Secrets without plaintext: `{file: PATH}` and `{command: [...]}` for every secret
setting, where each came from (never what), and a canary that shows up nowhere."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gate.config import ConfigError, load_config, parse_config

from .support import agent, chat, raw_config, write_config

ROOT = Path(__file__).resolve().parents[1]
CHAT = "/v1/chat/completions"


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def printing(text: str, code: int = 0, stderr: str = "") -> list[str]:
    """A command that prints `text` (and `stderr`) and exits with `code`."""
    script = f"import sys; print({text!r}); print({stderr!r}, file=sys.stderr); sys.exit({code})"
    return [sys.executable, "-c", script]


def parse(tmp_path: Path, env: dict[str, str] | None = None, **top: Any) -> Any:
    raw = raw_config(tmp_path, "http://127.0.0.1:9/api/v1", **top)
    return parse_config(raw, env or {}, tmp_path)


def problems(tmp_path: Path, **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, **top)
    return caught.value.problems


# --- files -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640])
def test_a_secret_file_is_read_and_stripped(tmp_path: Path, mode: int) -> None:
    secret_file(tmp_path / "key", "sk-or-from-file\n", mode)
    cfg = parse(tmp_path, openrouter={"api_key": {"file": "key"}})  # relative: config folder
    assert cfg.openrouter.api_key == "sk-or-from-file"
    assert cfg.secret_sources["cost_routing.openrouter.api_key"] == f"file {tmp_path / 'key'}"


def test_a_world_readable_secret_file_is_refused(tmp_path: Path) -> None:
    secret_file(tmp_path / "key", "sk-or-world-readable", 0o644)
    found = problems(tmp_path, openrouter={"api_key": {"file": str(tmp_path / "key")}})
    assert found == [
        f"cost_routing.openrouter.api_key.file: {tmp_path / 'key'} is readable by every user "
        "(mode 0644); restrict it, e.g. chmod 600 (or 0400 for a mounted secret)"
    ]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "cannot read"),
        (lambda p: secret_file(p, "  \n"), "is empty"),
        (lambda p: p.mkdir(), "is not a regular file"),
        (lambda p: secret_file(p, "a\nb\n"), "has more than one line"),
        (lambda p: os.mkfifo(p, 0o600), "is not a regular file"),  # must not hang
    ],
)
def test_unusable_secret_files_are_one_line_each(tmp_path: Path, make: Any, expected: str) -> None:
    make(tmp_path / "token")
    found = problems(tmp_path, admin_token={"file": "token"})
    assert len(found) == 1 and found[0].startswith("cost_routing.admin_token.file: ")
    assert expected in found[0]


def test_the_file_path_may_use_variables(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    secret_file(creds / "admin", "tok-from-systemd")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    cfg = parse(tmp_path, env, admin_token={"file": "${CREDENTIALS_DIRECTORY}/admin"})
    assert cfg.admin_token == "tok-from-systemd"


# --- commands ----------------------------------------------------------------------


def test_a_secret_command_runs_once_per_load(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    script = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
        "p.write_text(p.read_text() + 'x' if p.exists() else 'x'); print('agent-key-1')"
    )
    agents = {"a": agent(api_key={"command": [sys.executable, "-c", script, str(counter)]})}
    cfg = parse(tmp_path, agents=agents)
    assert cfg.agents["a"].api_key == "agent-key-1"
    assert counter.read_text() == "x"
    assert cfg.secret_sources["cost_routing.agents.a.api_key"].startswith("command python")


def test_a_failing_command_never_shows_its_output(tmp_path: Path) -> None:
    found = problems(tmp_path, admin_token={"command": printing("CANARY-OUT", 3, "CANARY-ERR")})
    assert found == [
        "cost_routing.admin_token.command: command "
        f"{Path(sys.executable).name} exited with status 3 (its output is never shown)"
    ]


def test_a_slow_command_is_killed_at_its_timeout(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    started = time.monotonic()
    found = problems(tmp_path, admin_token={"command": sleeper, "timeout_seconds": 0.3})
    assert time.monotonic() - started < 5
    assert found == [
        f"cost_routing.admin_token.command: command {Path(sys.executable).name} "
        "did not finish within 0.3 s"
    ]


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"command": ["no-such-program-here"]}, "command: command not found"),
        ({"command": []}, "command: must be a non-empty list"),
        ({"command": "op read x"}, "command: must be a non-empty list"),
        ({"file": "a", "command": ["b"]}, "give either file: PATH or command"),
        ({}, "give either file: PATH or command"),
        ({"file": "a", "timeout_seconds": 1}, "timeout_seconds: applies to command only"),
        ({"command": ["x"], "shell": True}, "shell: unknown key"),
    ],
)
def test_bad_secret_forms(tmp_path: Path, form: dict[str, Any], expected: str) -> None:
    secret_file(tmp_path / "a", "value")
    found = problems(tmp_path, openrouter={"api_key": form})
    assert any(expected in p for p in found), found


def test_every_secret_setting_takes_both_forms(tmp_path: Path) -> None:
    secret_file(tmp_path / "s", "from-a-file")
    cmd = {"command": printing("from-a-command")}
    cfg = parse(
        tmp_path,
        openrouter={"api_key": cmd, "headers": {"x-portkey-api-key": {"file": "s"}}},
        admin_token={"file": "s"},
        console={"enabled": True, "url": "https://console.example", "api_key": cmd},
        agents={"a": agent(api_key={"file": "s"}), "b": agent(api_key=cmd)},
    )
    assert cfg.openrouter.api_key == cfg.console.api_key == "from-a-command"
    assert cfg.admin_token == cfg.agents["a"].api_key == "from-a-file"
    assert cfg.openrouter.headers["x-portkey-api-key"] == "from-a-file"
    assert "from-a" not in repr(cfg)  # reprs (tracebacks, debug logs) carry no secret


def test_sources_name_environment_and_plaintext(tmp_path: Path) -> None:
    env = {"OR_KEY": "sk-or-env", "GATE_ADMIN_TOKEN": "adm"}
    cfg = parse(
        tmp_path, env, openrouter={"api_key": "${OR_KEY}"}, agents={"a": agent(api_key="plain")}
    )
    assert dict(cfg.secret_sources) == {
        "cost_routing.openrouter.api_key": "environment variable OR_KEY",
        "cost_routing.admin_token": "environment variable GATE_ADMIN_TOKEN",
        "cost_routing.agents.a.api_key": "plaintext in the config",
    }


def test_check_config_says_where_secrets_come_from_never_what(tmp_path: Path) -> None:
    canary = "sk-or-canary-check-config-0001"
    secret_file(tmp_path / "admin", "admin-canary-0002")
    raw = raw_config(
        tmp_path,
        "http://127.0.0.1:9/api/v1",
        openrouter={"api_key": {"command": printing(canary)}},
        admin_token={"file": "admin"},
    )
    done = subprocess.run(
        [sys.executable, "-m", "gate", "check-config", str(write_config(tmp_path / "g.yaml", raw))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "cost_routing.openrouter.api_key" in done.stdout
    assert f"command {Path(sys.executable).name}" in done.stdout
    assert f"file {tmp_path / 'admin'}" in done.stdout
    assert canary not in done.stdout + done.stderr
    assert "admin-canary" not in done.stdout + done.stderr


# --- a canary through a running gate -----------------------------------------------


async def test_a_canary_secret_appears_in_no_log_answer_or_spend_line(
    start_gate, mock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key, admin, agent_key = (f"CANARY{n}-{os.urandom(6).hex()}" for n in range(3))
    secret_file(tmp_path / "admin", admin + "\n")
    mock.state.expected_key = key
    raw = raw_config(
        tmp_path,
        mock.base_url,
        openrouter={"api_key": {"command": printing(key)}},
        admin_token={"file": "admin"},
        agents={"agent-1": agent(api_key={"command": printing(agent_key)}), "default": agent()},
    )
    cfg = load_config(write_config(tmp_path / "gate.yaml", raw), {})
    client = await start_gate(cfg)
    answers: list[str] = []

    async def call(method: str, path: str, **kwargs: Any) -> int:
        resp = await client.request(method, path, **kwargs)
        answers.append(json.dumps(dict(resp.headers)) + await resp.text())
        return resp.status

    good = {"X-Agent-ID": "agent-1", "Authorization": f"Bearer {agent_key}"}
    assert await call("POST", CHAT, json=chat(), headers=good) == 200
    assert await call("POST", CHAT, json=chat(stream=True), headers=good) == 200
    assert await call("POST", CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"}) == 401
    assert await call("POST", CHAT, json=chat(), headers={**good, "X-Agent-ID": "x"}) == 403
    assert await call("GET", "/api/spend", headers={"Authorization": "Bearer wrong"}) == 401
    admin_hdr = {"Authorization": f"Bearer {admin}"}
    assert await call("POST", "/api/reload", headers=admin_hdr) == 200  # runs the commands again
    assert await call("GET", "/api/health") == 200
    mock.state.expected_key = "another-key"  # upstream now rejects the gate's key
    assert await call("POST", CHAT, json=chat(), headers=good) == 401
    assert await call("GET", "/metrics", headers=admin_hdr) == 200
    await client.close()

    texts = [
        *answers,
        caplog.text,
        (tmp_path / "spend.jsonl").read_text(),
        (tmp_path / "openrouter_requests.log").read_text(),
    ]
    for secret in (key, admin, agent_key):
        for text in texts:
            assert secret not in text


def test_the_portkey_example_takes_every_secret_from_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    files = {
        "admin-token": "adm-1",
        "openrouter": "sk-or-1",
        "portkey": "pk-1",
        "pg-dsn": "postgresql://gate:pw@db.internal/ops",
    }
    for name, value in files.items():
        secret_file(creds / name, value + "\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    cfg = load_config(ROOT / "configs" / "examples" / "portkey.yaml", env)
    assert cfg.openrouter.base_url == "https://api.portkey.ai/v1"
    assert cfg.openrouter.api_key == "sk-or-1" and cfg.admin_token == "adm-1"
    assert dict(cfg.openrouter.headers) == {
        "x-portkey-api-key": "pk-1",
        "x-portkey-virtual-key": "openrouter-fallback",
        "X-Title": "Execwall OR Gate",
    }
    assert cfg.sinks[0].dsn == files["pg-dsn"] and cfg.sinks[0].table == "tool_calls"
    assert all(source.startswith("file ") for source in cfg.secret_sources.values())
    assert len(cfg.secret_sources) == 4
