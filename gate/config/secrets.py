"""Secret settings without plaintext in the config: `{file: PATH}` and `{command: [...]}`.

A file (a systemd credential, a mounted secret) is read once per load and refused when
every user may read it. A command (`op read op://vault/item/field`, `pass show gate`)
runs once per load — at start and on reload — without a shell, with no standard input,
in its own process group, killed whole at the timeout. What either gives is the secret:
it is never logged, never put in an error message (errors name the file or the
command's program, and say why), and its surrounding whitespace is dropped.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

MAX_SECRET_BYTES = 64 * 1024
DEFAULT_COMMAND_TIMEOUT = 10.0


class SecretError(Exception):
    """Why a secret could not be had; never carries the secret or the command's output."""


def read_secret_file(path: Path) -> str:
    """The file's text, stripped. Refused: not a regular file, readable by every user
    (the secret would not be secret), larger than 64 KiB, not UTF-8, or empty."""
    try:
        # O_NONBLOCK: a FIFO must not stall start-up; the check below refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SecretError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)  # of the file opened, not of whatever the path is now
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"{path} is not a regular file")
        if info.st_mode & stat.S_IROTH:
            mode = stat.S_IMODE(info.st_mode)
            raise SecretError(
                f"{path} is readable by every user (mode {mode:04o}); "
                "restrict it, e.g. chmod 600 (or 0400 for a mounted secret)"
            )
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    return _text(data, f"file {path}")


def run_secret_command(
    argv: Sequence[str], timeout: float, env: Mapping[str, str], cwd: Path | None = None
) -> str:
    """Run `argv` (no shell) and return what it printed, stripped. Its output is never
    shown: a failure says only how the command ended."""
    name = Path(argv[0]).name
    try:
        proc = subprocess.Popen(  # noqa: S603 - an operator's own command, no shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # its own process group: the timeout kills it whole
        )
    except FileNotFoundError:
        raise SecretError(f"command not found: {argv[0]}") from None
    except OSError as exc:
        raise SecretError(f"cannot run {name}: {exc.strerror or exc}") from None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SecretError(f"command {name} did not finish within {timeout:g} s") from None
    finally:
        if proc.poll() is None:  # interrupted (KeyboardInterrupt): leave nothing behind
            _kill_group(proc)
    if proc.returncode != 0:
        how = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        raise SecretError(f"command {name} {how} (its output is never shown)")
    return _text(out, f"command {name}'s output")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _text(data: bytes, what: str) -> str:
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"{what} is larger than {MAX_SECRET_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretError(f"{what} is not UTF-8 text") from None
    if not text:
        raise SecretError(f"{what} is empty")
    if "\n" in text or "\r" in text:
        raise SecretError(f"{what} has more than one line")
    return text
