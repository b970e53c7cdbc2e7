"""The typed config: frozen dataclasses built once from YAML, `${VAR}` interpolation,
secrets from files and commands, every problem named by its path.

`from gate.config import GateConfig, parse_config, load_config` is the public face;
the modules behind it: `types` (the dataclasses), `parse` (the whole document, the
cross-checks, the file), `sections` (openrouter, retry, limits, holds, console,
alerts, allowed_hosts), `stores` (spend_store, sinks), `agents` (agents and tiers),
`loops` (loop_breaker), `hosts`, `reader` (typed values and interpolation), `secrets`
(file and command secrets)."""

from gate.config.parse import *  # noqa: F403
from gate.config.parse import __all__ as __all__
