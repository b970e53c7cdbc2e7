"""How much of everything: the full run (`make bench`) and the smoke run (`--smoke`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    smoke: bool
    repeats: int
    tail_repeats: int  # (b) and (c): more repeats, so that each p99's min–max is a spread
    # (a) closed-loop throughput
    connections: int
    throughput_seconds: float
    warmup_seconds: float
    # (b) open-loop latency: (rate req/s, seconds) pairs
    rates: tuple[tuple[int, float], ...]
    # (c) concurrent streams
    streams: int
    stream_chunks: int
    chunk_delay: float
    stream_waves: int
    # (d) streams held open; each is held `hold_base + count * hold_per_stream` seconds
    held: tuple[int, ...]
    hold_base: float
    hold_per_stream: float
    open_limit: int
    # (e) spend log
    burst_lines: int
    path_requests: int
    path_concurrency: int
    fsync_requests: int
    # (f) start-up with spend logs of these sizes (lines)
    log_sizes: tuple[int, ...]
    restart_tail: int  # lines appended after the gate's start-up snapshot, before a restart


FULL = Settings(
    smoke=False,
    repeats=3,
    tail_repeats=6,
    connections=64,
    throughput_seconds=4,
    warmup_seconds=1,
    rates=((20, 6.0), (200, 3.0)),
    streams=50,
    stream_chunks=20,
    chunk_delay=0.01,
    stream_waves=3,
    held=(500, 2000),
    hold_base=1.5,
    hold_per_stream=0.005,  # 2000 open in 4.5-7 s here; held 11.5 s
    open_limit=100,
    burst_lines=100_000,
    path_requests=20_000,
    path_concurrency=64,
    fsync_requests=2_000,
    log_sizes=(0, 10_000, 1_000_000),
    restart_tail=10_000,  # the most a gate writing a snapshot every 10k lines leaves after it
)

SMOKE = Settings(
    smoke=True,
    repeats=1,
    tail_repeats=1,
    connections=8,
    throughput_seconds=0.3,  # wrk runs for at least 1 s
    warmup_seconds=0,
    rates=((20, 0.2), (200, 0.1)),
    streams=5,
    stream_chunks=4,
    chunk_delay=0.005,
    stream_waves=1,
    held=(20,),  # one count: (d) starts a fresh gate and floor for each
    hold_base=0.3,
    hold_per_stream=0.003,
    open_limit=100,
    burst_lines=500,
    path_requests=200,
    path_concurrency=8,
    fsync_requests=20,
    log_sizes=(100, 2_000),
    restart_tail=100,
)
