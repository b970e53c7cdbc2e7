"""The books: the ledger of budgets and holds, the JSONL spend log, replay, recovery of
holds left by a crash, compaction, and the shared Redis store."""
