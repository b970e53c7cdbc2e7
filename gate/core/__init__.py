"""Pure decisions and formats: money, tier routing, periods and timestamps, SSE
framing, scrubbing, JSON out. No aiohttp, no I/O; tests call them without a server."""
