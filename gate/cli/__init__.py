"""The subcommands of `python -m gate`: report, check-config, compact, sink-backfill,
store-rebuild."""
