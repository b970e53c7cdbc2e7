"""Open the spend store the config names: the JSONL store rebuilt from this instance's
log, or the shared Redis store, which refuses (SpendStoreStartError) to start on a
Redis that lost its state. The one place that knows both stores' types."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gate.books.ledger import Ledger
from gate.books.logscan import last_snapshot_offset, read_records
from gate.books.spendlog import SpendLog
from gate.books.store import SpendStore
from gate.config import GateConfig
from gate.core.clock import Clock

log = logging.getLogger(__name__)

SNAPSHOT_AT_START = 1000  # replayed more lines than this: write a snapshot once started


async def open_store(cfg: GateConfig, spend_log: SpendLog, clock: Clock) -> SpendStore:
    if cfg.spend_store.backend == "redis":
        # Loaded only here: redis is ~11 MB of a gate's memory that the JSONL store never needs
        from gate.books.redis_connect import redacted
        from gate.books.redis_store import RedisLedger

        shared = RedisLedger(cfg.agents, spend_log, clock, cfg.spend_store)
        await shared.start()
        log.info("spend store: %s, shared by every instance on it", redacted(shared.store.url))
        return shared
    ledger = Ledger(cfg.agents, spend_log, clock)
    ledger.marks_sends = True  # its replay tells a hold never sent from one maybe sent
    count = await asyncio.to_thread(_replay, ledger, cfg.spend_log)
    log.info("spend log: %d lines replayed, %d holds open", count, len(ledger.open_holds()))
    if count > SNAPSHOT_AT_START:
        ledger.write_snapshot()  # the next start replays from here
    return ledger


def _replay(ledger: Ledger, path: Path) -> int:
    return ledger.replay(read_records(path, last_snapshot_offset(path)))
