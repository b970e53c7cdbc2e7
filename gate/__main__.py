"""`python -m gate [--config PATH] [--host H] [--port P]` — the only reader of the
environment and of argv, and the only place logging is configured."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from aiohttp import web

from gate.app import create_app
from gate.books.loglock import SpendLogBusy
from gate.books.store import SpendStoreStartError
from gate.cli.commands import SUBCOMMANDS, add_config_arg
from gate.config import ConfigError, GateConfig, LimitsConfig, load_config
from gate.context import GATE, secrets_of
from gate.http.conns import CappedRunner, ResourceErrorLog, connection_cap, raise_fd_limit
from gate.logfilter import RedactingFilter
from gate.ops import runtime

log = logging.getLogger("gate")

SHUTDOWN_GRACE_SECONDS = 30.0


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gate",
        description="Execwall OR Gate. Also: `python -m gate report ...`, "
        "`python -m gate check-config PATH`, `sink-backfill` and `store-rebuild`.",
    )
    add_config_arg(parser, env)
    parser.add_argument("--host", default=env.get("ADAPTER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--log-level", default=env.get("GATE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if args.port is None:
        raw = env.get("ADAPTER_PORT", "8080")
        try:
            args.port = int(raw)
        except ValueError:
            parser.error(f"ADAPTER_PORT must be a port number, not {raw!r}")
    return args


async def serve(
    app: web.Application, host: str, port: int, limits: LimitsConfig, fd_limit: int
) -> None:
    """Serve until SIGTERM/SIGINT, then stop taking requests, let the ones in flight
    finish (up to the grace period), settle and flush. A connection that has not sent a
    whole request within `client_timeout_seconds` (slow headers included) is closed;
    connections beyond the caps are closed when accepted (`gate.http.conns`)."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(ResourceErrorLog())
    total = connection_cap(limits.max_connections, fd_limit)
    if total < limits.max_connections:
        log.warning("open-files limit %d: at most %d client connections", fd_limit, total)
    runner = CappedRunner(
        app,
        total,
        limits.max_connections_per_client,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.client_timeout_seconds,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for bound_host, bound_port in (a[:2] for a in runner.addresses):
            print(f"gate listening on http://{bound_host}:{bound_port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping: no new requests; waiting for those in flight")
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:], env)
    args = parse_args(argv, env)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg: GateConfig = load_config(args.config, env)
    except ConfigError as err:
        for problem in err.problems:
            print(f"gate: {problem}", file=sys.stderr)
        return 2
    for warning in cfg.warnings:
        log.warning("config: %s", warning)
    try:
        app = create_app(cfg, env=env)
        # Secrets as of now: the running gate's after a reload, else the config's.
        redact = RedactingFilter(lambda: app[GATE].secrets() if GATE in app else secrets_of(cfg))
        for handler in logging.getLogger().handlers:
            handler.addFilter(redact)
        fd_limit = raise_fd_limit()  # idle connections must not run it out (systemd: 1024)
        runtime.after_startup(env)
        runtime.run(serve(app, args.host, args.port, cfg.limits, fd_limit), env)
    except (SpendStoreStartError, SpendLogBusy, runtime.RuntimeChoiceError) as err:
        print(f"gate: {err}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gate: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
