"""Per model, how many prompt tokens an estimate unit (`gate.core.prompt`) really is.

Each settled request line that reports `prompt_tokens` for the model that answered is
compared with the estimate its hold used; a model's factor is the highest ratio of its
last `WINDOW` requests plus `MARGIN`, within [`FLOOR`, `CEILING`]. A hold assumes the
highest factor among the models it may go to. Live state owned by the gate (`Gate`),
fed by `Ledger.line_observers`, empty at start: until a model has settled, its factor
is `DEFAULT_FACTOR` (one token per two bytes of billed text, what code and JSON can
come to), or, once other models have, the highest of theirs times `UNSEEN_MARGIN`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from gate.core.prompt import BYTES_PER_UNIT
from gate.core.router import PromptTokens

DEFAULT_FACTOR = BYTES_PER_UNIT / 2  # one token per 2 bytes of billed text
CEILING = float(BYTES_PER_UNIT)  # one token per byte: the most a byte-level tokenizer makes
FLOOR = 0.5  # one token per 8 bytes: no prose tokenizes sparser
MARGIN = 1.1  # above the highest ratio seen
UNSEEN_MARGIN = 1.25  # a model not yet seen, above the highest factor of the others
WINDOW = 64  # settled requests a model's factor remembers
MIN_UNITS = 64  # smaller estimates teach nothing: the template's tokens dominate them
PENDING_MAX = 65_536  # estimates waiting for their line (a line never written is dropped)


class Calibration:
    def __init__(self) -> None:
        self._ratios: dict[str, deque[float]] = {}
        self._factors: dict[str, float] = {}
        self._highest = 0.0  # the highest factor of any model seen
        self._pending: dict[str, int] = {}  # request id -> the estimate its hold used

    def factor(self, model: str) -> float:
        found = self._factors.get(model)
        if found is not None:
            return found
        if self._highest:
            return min(self._highest * UNSEEN_MARGIN, DEFAULT_FACTOR)
        return DEFAULT_FACTOR

    def prompt_tokens(self, request_id: str, units: int) -> PromptTokens:
        """What a hold assumes for a prompt of `units`, given the models it may go to;
        the estimate is kept until the request's line is written."""
        if len(self._pending) >= PENDING_MAX:
            self._pending.pop(next(iter(self._pending)))
        self._pending[request_id] = units

        def tokens(models: Sequence[str]) -> int:
            factor = max((self.factor(m) for m in models), default=DEFAULT_FACTOR)
            return math.ceil(units * factor)

        return tokens

    def request_line(self, line: Mapping[str, Any], refused: bool) -> None:
        """A `Ledger.line_observers` hook: learn from a settled request's usage."""
        request_id = line.get("request_id")
        units = self._pending.pop(request_id, None) if isinstance(request_id, str) else None
        if refused or units is None or units < MIN_UNITS:
            return
        model, tokens = line.get("model"), line.get("prompt_tokens")
        if not isinstance(model, str) or not isinstance(tokens, int) or tokens <= 0:
            return
        self.learn(model, tokens / units)

    def learn(self, model: str, ratio: float) -> None:
        ratios = self._ratios.get(model)
        if ratios is None:
            ratios = self._ratios[model] = deque(maxlen=WINDOW)
        ratios.append(min(ratio, CEILING))
        factor = min(max(max(ratios) * MARGIN, FLOOR), CEILING)
        self._factors[model] = factor
        self._highest = max(self._factors.values())

    def view(self) -> dict[str, Any]:
        """Each model's factor (tokens per unit) and how many requests it rests on."""
        return {
            m: {"tokens_per_unit": round(f, 4), "samples": len(self._ratios[m])}
            for m, f in sorted(self._factors.items())
        }
