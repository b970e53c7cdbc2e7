"""Reaching the shared store: the Redis client as the gate configures it, the store's
URL without its password for messages, what to do when it holds no gate state, and the
epoch encodings of times the scripts compare."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gate.config import SpendStoreConfig
from gate.core.clock import parse_ts

REBUILD_COMMAND = "python -m gate store-rebuild --config PATH --log LOG [--log LOG ...]"


def redacted(url: str | None) -> str:
    """The store's URL without its password, for messages."""
    parts = urlsplit(url or "")
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def connect(store: SpendStoreConfig) -> Redis:
    assert store.url is not None
    return Redis.from_url(
        store.url,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),  # the gate retries itself, in order
        decode_responses=True,
    )


def epoch(ts: datetime | None) -> str:
    return "" if ts is None else str(int(ts.timestamp()))


EPOCH_START = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(ts: datetime | str | None) -> str:
    """A log line's ts as whole epoch milliseconds (exactly what `iso` wrote), or ''."""
    when = parse_ts(ts) if isinstance(ts, str) else ts
    return "" if when is None else str((when - EPOCH_START) // timedelta(milliseconds=1))


def from_epoch_ms(value: object) -> datetime:
    return EPOCH_START + timedelta(milliseconds=int(str(value)))


def not_ready_message(store: SpendStoreConfig) -> str:
    url = redacted(store.url or "")
    return (
        f"spend store {url} (key prefix {store.key_prefix!r}) holds no gate state; "
        f"rebuild it from every instance's spend log: {REBUILD_COMMAND} "
        "(a new deployment: the same command without --log)"
    )
