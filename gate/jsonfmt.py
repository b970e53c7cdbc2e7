"""JSON out of the gate: compact, with money (Decimal) as JSON numbers."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import partial


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


dumps = partial(json.dumps, separators=(",", ":"), default=_default)
