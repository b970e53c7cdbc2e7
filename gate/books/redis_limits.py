"""Rate-limit windows shared through Redis: the same sliding window as
`gate.core.ratelimit.Window`, kept as one sorted set per limit (score: admission time in
ms, member: `id|amount`) so every instance on one Redis counts into the same window.

`ADMIT` checks every window of one request and counts it in all of them, or in none,
in one atomic step; `CORRECT` swaps one entry's amount (tokens settled, or 0 for a
request refused later), and does nothing once the entry left its window. Each key
expires one window after its newest entry, so nothing outlives the minute it counts.
Used by `gate.http.limits` (through `gate.http.limits_shared`) on the Redis store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

ADMIT = """
local now, span = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = #KEYS
local used, waits, newest = {}, {}, {}
local blocked = false
for i = 1, n do
  local key = KEYS[i]
  local limit, amount = tonumber(ARGV[3 + 3 * (i - 1)]), tonumber(ARGV[4 + 3 * (i - 1)])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - span)
  local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  local total = 0
  for j = 1, #entries, 2 do
    total = total + tonumber(string.match(entries[j], '|(%d+)$'))
  end
  used[i], waits[i] = total, 0
  newest[i] = #entries > 0 and tonumber(entries[#entries]) or -1
  local excess = total + amount - limit
  if excess > 0 and total > 0 then
    local freed = 0
    for j = 1, #entries, 2 do
      freed = freed + tonumber(string.match(entries[j], '|(%d+)$'))
      if freed >= excess or freed >= total then
        waits[i] = math.max(tonumber(entries[j + 1]) + span - now, 1)
        break
      end
    end
    blocked = true
  end
end
local reply = {blocked and 1 or 0}
for i = 1, n do
  local amount = tonumber(ARGV[4 + 3 * (i - 1)])
  if not blocked then
    redis.call('ZADD', KEYS[i], now, ARGV[5 + 3 * (i - 1)] .. '|' .. amount)
    redis.call('PEXPIRE', KEYS[i], span)
    used[i], newest[i] = used[i] + amount, now
  end
  table.insert(reply, waits[i])
  table.insert(reply, used[i])
  table.insert(reply, newest[i] >= 0 and (newest[i] + span - now) or 0)
end
return reply
"""

CORRECT = """
local old = ARGV[1] .. '|' .. ARGV[2]
local at = redis.call('ZSCORE', KEYS[1], old)
if not at then return 0 end
redis.call('ZREM', KEYS[1], old)
redis.call('ZADD', KEYS[1], at, ARGV[1] .. '|' .. ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Check:
    key: str  # e.g. prefix + "limit:requests:" + agent_id
    limit: int
    amount: int


@dataclass(frozen=True, slots=True)
class Counted:
    """Per check: ms until it fits (0: fits), the amount now in the window, and ms
    until the window is empty again."""

    blocked: bool
    waits_ms: list[int]
    used: list[int]
    reset_ms: list[int]


class RedisWindows:
    def __init__(self, client: Redis, window_ms: int = 60_000) -> None:
        self.window_ms = window_ms
        self._client = client
        self._admit = client.register_script(ADMIT)
        self._correct = client.register_script(CORRECT)

    async def admit(self, checks: list[Check], now_ms: int, entry_id: str) -> Counted:
        args: list[Any] = [now_ms, self.window_ms]
        for c in checks:
            args += [c.limit, c.amount, entry_id]
        reply = [int(x) for x in await self._admit(keys=[c.key for c in checks], args=args)]
        rest = reply[1:]
        return Counted(bool(reply[0]), rest[0::3], rest[1::3], rest[2::3])

    async def correct(self, key: str, entry_id: str, old: int, new: int) -> bool:
        return bool(await self._correct(keys=[key], args=[entry_id, old, new]))

    async def usage(self, keys: list[str], now_ms: int) -> list[tuple[int, int]]:
        """Per key, read only: the amount in its window now, and when (ms since the
        epoch) the window is empty again (0: it is)."""
        low = f"({now_ms - self.window_ms}"
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrangebyscore(key, low, "+inf", withscores=True)
            replies = await pipe.execute()
        out = []
        for entries in replies:
            used = sum(int(_text(member).rsplit("|", 1)[1]) for member, _ in entries)
            empty_at = int(entries[-1][1]) + self.window_ms if entries else 0
            out.append((used, empty_at))
        return out


def _text(member: str | bytes) -> str:
    return member.decode() if isinstance(member, bytes) else member
