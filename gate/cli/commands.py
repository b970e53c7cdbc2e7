"""The gate's subcommands: `report`, `check-config`, `compact`, `sink-backfill`,
`store-rebuild`. Each takes its argv and the environment (read by `__main__` only) and
returns an exit code: 0 done, 1 failed, 2 bad arguments or config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gate.books import compact
from gate.books.loglock import SpendLogBusy
from gate.cli import report
from gate.config import ConfigError, GateConfig, load_config
from gate.core.scrub import scrub
from gate.sinks import postgres as sinks


def add_config_arg(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    parser.add_argument(
        "--config", type=Path, default=Path(env.get("CONFIG_PATH", "configs/policy.yaml"))
    )


def load_or_report(path: Path, env: Mapping[str, str], prefix: str = "gate") -> GateConfig | None:
    """The config, or None after printing one line per problem."""
    try:
        cfg = load_config(path, env)
    except ConfigError as err:
        for problem in err.problems:
            print(f"{prefix}: {problem}", file=sys.stderr)
        return None
    for warning in cfg.warnings:
        print(f"{prefix}: warning: {warning}", file=sys.stderr)
    return cfg


def report_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gate report", description="Summarise the spend log (rotated files too)."
    )
    parser.add_argument("--log", type=Path, action="append", help="a spend log; repeat for several")
    add_config_arg(parser, env)
    parser.add_argument("--since", help="ISO date or time (UTC), e.g. 2026-11-01")
    parser.add_argument("--agent")
    parser.add_argument("--by", choices=report.GROUPS, default="agent")
    parser.add_argument("--format", choices=report.FORMATS, default="table")
    args = parser.parse_args(argv)
    logs = args.log
    if not logs:
        cfg = load_or_report(args.config, env, "gate report")
        if cfg is None:
            return 2
        logs = [cfg.spend_log]
    lines = report.request_lines(logs, args.since, args.agent)
    print(report.render(report.summarise(lines, args.by), args.by, args.format))
    return 0


def check_config_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gate check-config")
    parser.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    cfg = load_or_report(args.config, env)
    if cfg is None:
        return 2
    print(f"{args.config}: ok")
    print(f"  spend log      {cfg.spend_log}")
    print(f"  upstream       {cfg.openrouter.base_url}")
    key = "set" if cfg.openrouter.api_key else "not set: pass-through of the client's key"
    print(f"  upstream key   {key}")
    print(f"  admin token    {'set' if cfg.admin_token else 'not set: admin changes disabled'}")
    for agent in cfg.agents.values():
        tiers = ", ".join(f"{t.name}>{t.threshold}" for t in agent.tiers)
        keyed = "keyed" if agent.api_key else "no key"
        budget = f"{agent.budget_total} USD/{agent.period}"
        print(f"  agent {agent.agent_id:<14} {budget}  {tiers}  ({keyed})")
    for sink in cfg.sinks:
        print(f"  sink           postgres, table {sink.table}")
    if cfg.secret_sources:
        print("  secrets        where each comes from (values are never shown)")
        width = max(len(path) for path in cfg.secret_sources)
        for path, source in cfg.secret_sources.items():
            print(f"    {path:<{width}}  {source}")
    return 0


def sink_backfill_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Replay spend logs into the Postgres sinks' tables; rows already there stay as they
    are, so running it again adds nothing."""
    parser = argparse.ArgumentParser(
        prog="python -m gate sink-backfill",
        description="Insert every request line of a spend log into the Postgres sink's "
        "table (idempotent: rows already there are left alone).",
    )
    add_config_arg(parser, env)
    parser.add_argument("--log", type=Path, action="append", help="a spend log; repeat for several")
    parser.add_argument("--table", help="only the sink writing this table")
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="gate sink-backfill: %(message)s")
    cfg = load_or_report(args.config, env)
    if cfg is None:
        return 2
    chosen = [s for s in cfg.sinks if args.table in (None, s.table)]
    if not chosen:
        which = f"writing table {args.table}" if args.table else "(cost_routing.sinks)"
        print(f"gate: {args.config} has no postgres sink {which}", file=sys.stderr)
        return 2
    logs = args.log or [cfg.spend_log]
    for path in logs:
        if not path.is_file():
            print(f"gate: {path}: no such spend log", file=sys.stderr)
            return 2
    for sink in chosen:
        try:
            done = asyncio.run(sinks.backfill(sink, logs))
        except Exception as exc:  # one line, the DSN scrubbed, never a traceback with it
            reason = scrub(f"{type(exc).__name__}: {exc}", sinks.dsn_secrets(sink.dsn))
            print(f"gate: table {sink.table}: backfill failed: {reason}", file=sys.stderr)
            return 1
        print(
            f"{sink.table}: {done.requests} request lines read, {done.inserted} inserted, "
            f"{done.present} already there, {done.skipped} unreadable"
        )
    return 0


def store_rebuild_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Rebuild the shared (Redis) spend store from the spend logs of every instance."""
    parser = argparse.ArgumentParser(
        prog="python -m gate store-rebuild",
        description="Rebuild the Redis spend store from every instance's spend log "
        "(none: initialise it empty, for a new deployment).",
    )
    add_config_arg(parser, env)
    parser.add_argument("--log", type=Path, action="append", default=[], help="repeat per log")
    parser.add_argument("--force", action="store_true", help="replace state already there")
    args = parser.parse_args(argv)
    cfg = load_or_report(args.config, env)
    if cfg is None:
        return 2
    if cfg.spend_store.backend != "redis":
        print(f"gate: {args.config} does not use a redis spend_store", file=sys.stderr)
        return 2
    for path in args.log:
        if not path.is_file():
            print(f"gate: {path}: no such spend log", file=sys.stderr)
            return 2
    from redis.exceptions import RedisError  # the Redis store's, loaded for it alone

    from gate.books import redis_rebuild
    from gate.books.redis_connect import redacted

    try:
        done = asyncio.run(redis_rebuild.rebuild(cfg, args.log, force=args.force))
    except redis_rebuild.RebuildRefused as err:
        print(f"gate: {err}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        where = redacted(cfg.spend_store.url)
        print(f"gate: spend store {where} cannot be used: {exc}", file=sys.stderr)
        return 1
    print(f"spend store rebuilt from {len(args.log)} logs ({done.records} lines)")
    for agent_id, spent in sorted(done.spent.items()):
        print(f"  {agent_id:<20} spent {spent}")
    return 0


def compact_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gate compact",
        description="Move the spend log's lines before its last snapshot to an archive "
        "beside it (run while the gate is stopped).",
    )
    parser.add_argument("--log", type=Path, help="the spend log (default: the config's)")
    add_config_arg(parser, env)
    args = parser.parse_args(argv)
    path = args.log
    if path is None:
        cfg = load_or_report(args.config, env, "gate compact")
        if cfg is None:
            return 2
        path = cfg.spend_log
    try:
        done = compact.compact(path)
    except (compact.CompactError, SpendLogBusy) as err:
        print(f"gate compact: {err}", file=sys.stderr)
        return 1
    print(f"archived {done.archived_bytes} bytes to {done.archive}")
    print(f"kept {done.kept_bytes} bytes in {path} (from its last snapshot)")
    print(f"whole history: python -m gate report --log {done.archive} --log {path}")
    return 0


SUBCOMMANDS: dict[str, Callable[[Sequence[str], Mapping[str, str]], int]] = {
    "compact": compact_main,
    "report": report_main,
    "check-config": check_config_main,
    "sink-backfill": sink_backfill_main,
    "store-rebuild": store_rebuild_main,
}
