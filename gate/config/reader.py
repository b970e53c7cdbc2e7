"""Reading typed values out of YAML mappings: interpolation of `${VAR}` and
`${VAR:-default}`, numbers, flags, URLs, secrets — each problem collected with its
YAML path instead of raised, so a config reports all of them at once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gate.config.secrets import (
    DEFAULT_COMMAND_TIMEOUT,
    SecretError,
    read_secret_file,
    run_secret_command,
)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")
_ABSENT = object()  # missing, null or empty
_FAILED = object()  # already reported (an unset ${VAR})


class _EnvText(str):
    """Text produced by `${...}` interpolation; number and bool fields may parse it."""

    __slots__ = ()


class _Reader:
    """Reads typed values out of YAML mappings, collecting problems instead of raising."""

    def __init__(self, env: Mapping[str, str], base_dir: Path) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []  # accepted, but worth a line at start-up
        self.sources: dict[str, str] = {}  # secret's YAML path -> where it came from

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")

    def mapping(self, value: object, path: str) -> Mapping[Any, Any] | None:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return value
        self.fail(path, "must be a mapping")
        return None

    def section(
        self, m: Mapping[Any, Any], key: str, path: str, known: tuple[str, ...] | None = None
    ) -> Mapping[Any, Any]:
        sub = self.mapping(m.get(key), f"{path}.{key}") or {}
        if known is not None:
            self.unknown(sub, f"{path}.{key}", known)
        return sub

    def unknown(self, m: Mapping[Any, Any], path: str, known: tuple[str, ...]) -> None:
        for key in m:
            if key not in known:
                near = get_close_matches(str(key), known, n=1)
                self.fail(
                    f"{path}.{key}", "unknown key" + (f" (did you mean {near[0]}?)" if near else "")
                )

    def interpolate(self, text: str, path: str) -> object:
        unset: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name, has_default, default = match.group(1, 2, 3)
            value = self.env.get(name)
            if has_default is not None and not value:
                return str(default)
            if value is None:
                unset.append(name)
                return ""
            return value

        out, count = _VAR.subn(replace, text)
        for name in unset:
            self.fail(path, f"environment variable {name} is not set")
        return _FAILED if unset else _EnvText(out) if count else out

    def get(self, m: Mapping[Any, Any], key: str, path: str) -> object:
        value = m.get(key)
        if isinstance(value, str):
            value = self.interpolate(value, f"{path}.{key}")
        return _ABSENT if value is None or value == "" else value

    def text(
        self, m: Mapping[Any, Any], key: str, path: str, *, required: bool = False
    ) -> str | None:
        value = self.get(m, key, path)
        if value is _ABSENT and required:
            self.fail(f"{path}.{key}", "is required")
        if value is _ABSENT or value is _FAILED:
            return None
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", "must be a string")
            return None
        return str(value)

    def secret(self, m: Mapping[Any, Any], key: str, path: str) -> str | None:
        """A secret: text (plain or `${VAR}`), `{file: PATH}` or `{command: [...]}`.
        Records where it came from in `sources`; the value itself goes nowhere else."""
        where, raw = f"{path}.{key}", m.get(key)
        if isinstance(raw, Mapping):
            return self._secret_form(raw, where)
        value = self.text(m, key, path)
        if value is not None:
            names = sorted({x.group(1) for x in _VAR.finditer(raw)}) if isinstance(raw, str) else []
            self.sources[where] = (
                f"environment variable {', '.join(names)}" if names else "plaintext in the config"
            )
        return value

    def _secret_form(self, m: Mapping[Any, Any], where: str) -> str | None:
        self.unknown(m, where, ("file", "command", "timeout_seconds"))
        if ("file" in m) == ("command" in m):
            self.fail(where, "give either file: PATH or command: [program, args...]")
            return None
        if "file" in m:
            if "timeout_seconds" in m:
                self.fail(f"{where}.timeout_seconds", "applies to command only")
            if (name := self.text(m, "file", where, required=True)) is None:
                return None
            path = Path(os.path.normpath(self.base_dir / name))
            try:
                value = read_secret_file(path)
            except SecretError as err:
                self.fail(f"{where}.file", str(err))
                return None
            self.sources[where] = f"file {path}"
            return value
        timeout = self.seconds(m, "timeout_seconds", where, DEFAULT_COMMAND_TIMEOUT)
        if (argv := self._argv(m.get("command"), f"{where}.command")) is None:
            return None
        try:
            value = run_secret_command(argv, timeout, self.env, self.base_dir)
        except SecretError as err:
            self.fail(f"{where}.command", str(err))
            return None
        self.sources[where] = f"command {Path(argv[0]).name}"
        return value

    def _argv(self, items: object, path: str) -> list[str] | None:
        if not isinstance(items, list) or not items:
            self.fail(path, "must be a non-empty list: [program, args...] (no shell)")
            return None
        argv: list[str] = []
        for i, item in enumerate(items):
            value = self.interpolate(item, f"{path}[{i}]") if isinstance(item, str) else item
            if value is _FAILED:
                return None
            if not isinstance(value, str) or (i == 0 and not value):
                self.fail(f"{path}[{i}]", "must be a string")
                return None
            argv.append(str(value))
        return argv

    def url(
        self,
        m: Mapping[Any, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        schemes: tuple[str, ...] = ("http", "https"),
        plain: bool = True,
    ) -> str | None:
        """A URL with a host; `plain`: without a query (a base other paths are added to)."""
        value = self.text(m, key, path, required=required)
        if value is not None and not _is_url(value, schemes, plain):
            kind = "an http(s)" if "http" in schemes else f"a {schemes[0]}://"
            self.fail(f"{path}.{key}", f"must be {kind} URL")
            return None
        return value.rstrip("/") if value else None

    def choice(
        self, m: Mapping[Any, Any], key: str, path: str, options: tuple[str, ...], default: str
    ) -> str:
        value = self.text(m, key, path)
        if value is not None and value not in options:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(options)}")
        return value if value in options else default

    def flag(self, m: Mapping[Any, Any], key: str, path: str, default: bool) -> bool:
        value = self.get(m, key, path)
        if value is _ABSENT or value is _FAILED:
            return default
        if isinstance(value, _EnvText) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, bool):
            return value
        self.fail(f"{path}.{key}", "must be true or false")
        return default

    def number(
        self,
        m: Mapping[Any, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        positive: bool = False,
        high: Decimal | None = None,
        whole: bool = False,
    ) -> Decimal | None:
        """A number >= 0 (> 0 when `positive`, <= `high`); None when absent or reported."""
        value, where = self.get(m, key, path), f"{path}.{key}"
        if value is _ABSENT and required:
            self.fail(where, "is required")
        if value is _ABSENT or value is _FAILED:
            return None
        number = _as_decimal(value)
        if number is None or (whole and number != number.to_integral_value()):
            self.fail(where, "must be a whole number" if whole else "must be a number")
        elif high is not None and not 0 <= number <= high:
            self.fail(where, f"must be within 0..{high}")
        elif positive and number <= 0:
            self.fail(where, "must be greater than 0")
        elif number < 0:
            self.fail(where, "must not be negative")
        else:
            return number
        return None

    def decimal(
        self, m: Mapping[Any, Any], key: str, path: str, default: Decimal, *, required: bool = False
    ) -> Decimal:
        value = self.number(m, key, path, required=required)
        return default if value is None else value

    def seconds(
        self, m: Mapping[Any, Any], key: str, path: str, default: float, *, positive: bool = True
    ) -> float:
        value = self.number(m, key, path, positive=positive)
        return default if value is None else float(value)

    def integer(
        self, m: Mapping[Any, Any], key: str, path: str, default: int, *, positive: bool = False
    ) -> int:
        value = self.number(m, key, path, positive=positive, whole=True)
        return default if value is None else int(value)


def _as_decimal(value: object) -> Decimal | None:
    if isinstance(value, _EnvText):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = Decimal(str(value))
    else:
        return None
    return number if number.is_finite() else None


def _is_url(text: str, schemes: tuple[str, ...], plain: bool) -> bool:
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme in schemes
        and bool(parts.hostname)
        and not parts.fragment
        and not (plain and parts.query)
        and not any(c.isspace() for c in text)
    )
