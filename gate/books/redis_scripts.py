"""The shared store's keys and its Lua scripts: each check-and-hold, each settlement,
each admin change is one script, so Redis runs it as one atomic step.

Money in Redis is whole pico-USD (10^-12) kept as integers and changed with HINCRBY,
so sums stay exact; only the cap check compares as Lua numbers (doubles, exact to
well below a cent for any budget under about 9000 USD, and conservative beyond).

Every script that touches an account starts the same way (`PROLOGUE`): it answers
{-1} when the store was never initialised (Redis restarted empty: the gate must not
start every agent at zero), creates the account from the caller's config when it is
new, and rolls the period by compare-and-set on `period_start`, so a period rolls
once however many instances see it. Account replies are
{code, rolled, budget_total, spent, held, period_start, admin}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from gate.books.holds import Hold

SCALE = Decimal(10) ** 12
DONE_TTL_SECONDS = 7 * 24 * 3600  # a settled request id is remembered this long
NOT_READY = -1
OK, REFUSED, ALREADY_SETTLED = 0, 1, 2


def to_units(amount: Decimal) -> int:
    return int((amount * SCALE).to_integral_value(ROUND_HALF_EVEN))


def from_units(units: object) -> Decimal:
    if isinstance(units, bytes):
        units = units.decode()
    value = (Decimal(int(str(units or 0))) / SCALE).normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value  # type: ignore[operator]


def hold_entry(agent_id: str, units: int, instance: str, expires: float, api: str = "chat") -> str:
    """A new hold as the holds hash keeps it (JSON; `NAME` and `CLAIM` change it)."""
    return json.dumps(
        {
            "agent_id": agent_id,
            "api": api,
            "amount": str(units),
            "generation_id": None,
            "instance": instance,
            "expires_at": expires,
        }
    )


def hold_of_entry(request_id: str, encoded: str) -> Hold:
    saved = json.loads(encoded)
    generation = saved.get("generation_id")
    api = saved.get("api")
    return Hold(
        request_id,
        str(saved.get("agent_id")),
        from_units(saved.get("amount")),
        generation if isinstance(generation, str) else None,
        api=api if isinstance(api, str) else "chat",
    )


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def marker(self) -> str:
        return self.prefix + "initialized"

    @property
    def holds(self) -> str:
        return self.prefix + "holds"

    @property
    def expiry(self) -> str:
        return self.prefix + "hold_expiry"

    def account(self, agent_id: str) -> str:
        return f"{self.prefix}acct:{agent_id}"

    def done(self, request_id: str) -> str:
        return f"{self.prefix}done:{request_id}"


# KEYS[1] marker, KEYS[2] account; ARGV[1] period start (epoch seconds, '' = never),
# ARGV[2] the config's budget_total, ARGV[3] the config's budget_spent ('' = unknown agent).
PROLOGUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local acct = KEYS[2]
local rolled = 0
if ARGV[2] ~= '' and redis.call('EXISTS', acct) == 0 then
  redis.call('HSET', acct, 'budget_total', ARGV[2], 'spent', ARGV[3], 'held', '0',
             'period_start', ARGV[1], 'admin', '0', 'config_total', ARGV[2])
end
if ARGV[2] ~= '' then
  local cur = redis.call('HGET', acct, 'period_start')
  if ARGV[1] == '' or not cur or cur == '' then
    redis.call('HSET', acct, 'period_start', ARGV[1])
  elseif tonumber(cur) < tonumber(ARGV[1]) then
    redis.call('HSET', acct, 'period_start', ARGV[1], 'spent', '0')
    rolled = 1
  end
end
local function state(code)
  local s = redis.call('HMGET', acct, 'budget_total', 'spent', 'held', 'period_start', 'admin')
  return {code, rolled, s[1] or '0', s[2] or '0', s[3] or '0', s[4] or '', s[5] or '0'}
end
"""

STATE = PROLOGUE + "return state(0)\n"

# KEYS[3] holds, KEYS[4] expiry; ARGV[4] amount, ARGV[5] hard cap '1'/'0',
# ARGV[6] request id, ARGV[7] the hold as JSON, ARGV[8] expires at (epoch seconds).
RESERVE = (
    PROLOGUE
    + """
local s = redis.call('HMGET', acct, 'budget_total', 'spent', 'held')
if ARGV[5] == '1' and
   tonumber(s[2] or '0') + tonumber(s[3] or '0') + tonumber(ARGV[4]) > tonumber(s[1] or '0') then
  return state(1)
end
redis.call('HINCRBY', acct, 'held', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[6])
return state(0)
"""
)

# KEYS[3] holds, KEYS[4] expiry, KEYS[5] the request's done key; ARGV[4] cost,
# ARGV[5] request id, ARGV[6] how long the done key lives, ARGV[7] its request line's
# ts (epoch ms, '' = none), ARGV[8] the settling instance, ARGV[9] that instance's
# reset count for the agent when the line was written. Settled once: a second
# settlement of the same request (a retry, another instance) changes nothing.
# The cost counts only where the logs' replay counts it (see `EPOCH_RULE`): a line
# from before the period start or before the last reset/spent-set is not added.
EPOCH_RULE = """
local function counts(at, by, n)
  if not at or at == '' then return true end
  local e = redis.call('HMGET', acct, 'period_start', 'since', 'since_by', 'since_n', 'last')
  if e[1] and e[1] ~= '' and tonumber(at) < tonumber(e[1]) * 1000 then return false end
  local ok
  if e[3] and e[3] == by then ok = tonumber(n) >= tonumber(e[4])
  else ok = not e[2] or e[2] == '' or tonumber(at) > tonumber(e[2]) end
  if ok and (not e[5] or e[5] == '' or tonumber(at) > tonumber(e[5])) then
    redis.call('HSET', acct, 'last', at)
  end
  return ok
end
"""
SETTLE = (
    PROLOGUE
    + EPOCH_RULE
    + """
if not redis.call('SET', KEYS[5], '1', 'EX', ARGV[6], 'NX') then return state(2) end
local h = redis.call('HGET', KEYS[3], ARGV[5])
if h then
  redis.call('HDEL', KEYS[3], ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
  local amount = cjson.decode(h)['amount']
  if amount ~= '0' then redis.call('HINCRBY', acct, 'held', '-' .. amount) end
end
if ARGV[4] ~= '0' and counts(ARGV[7], ARGV[8], ARGV[9]) then
  redis.call('HINCRBY', acct, 'spent', ARGV[4])
end
return state(0)
"""
)

# ARGV[4] new budget_total ('' = unchanged), ARGV[5] new spent ('' = unchanged),
# ARGV[6] the caller's now (epoch ms), ARGV[7] the caller's instance, ARGV[8] its reset
# count for the agent after this change. A new spent starts a new epoch: `since` is
# the later of now and the newest settlement counted (so that one is before it, as
# in the logs), and is returned last; the caller's log line carries it as its ts.
BUDGET = (
    PROLOGUE
    + """
if ARGV[4] ~= '' then redis.call('HSET', acct, 'budget_total', ARGV[4], 'admin', '1') end
local since = ARGV[6]
if ARGV[5] ~= '' then
  local last = redis.call('HGET', acct, 'last')
  if last and last ~= '' and tonumber(last) > tonumber(since) then since = last end
  redis.call('HSET', acct, 'spent', ARGV[5], 'since', since, 'since_by', ARGV[7],
             'since_n', ARGV[8])
end
local reply = state(0)
table.insert(reply, since)
return reply
"""
)

# A (re)loaded config: its total is in force unless an admin set one and the config's
# own total has not changed since.
POLICY = (
    PROLOGUE
    + """
local admin = redis.call('HGET', acct, 'admin')
if admin ~= '1' or redis.call('HGET', acct, 'config_total') ~= ARGV[2] then
  redis.call('HSET', acct, 'budget_total', ARGV[2], 'admin', '0', 'config_total', ARGV[2])
end
return state(0)
"""
)

# KEYS[1] holds; ARGV[1] request id, ARGV[2] generation id.
NAME = """
local h = redis.call('HGET', KEYS[1], ARGV[1])
if not h then return 0 end
local o = cjson.decode(h)
o['generation_id'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(o))
return 1
"""

# KEYS[1] holds, KEYS[2] expiry; ARGV[1] new expiry, ARGV[2..] this instance's holds.
RENEW = """
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[i])
  end
end
return 0
"""

# KEYS[1] marker, KEYS[2] holds, KEYS[3] expiry; ARGV[1] now, ARGV[2] new expiry,
# ARGV[3] the claiming instance, ARGV[4] at most this many. Takes over holds whose
# expiry passed (their instance died): only one instance gets each.
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(ids) do
  local h = redis.call('HGET', KEYS[2], id)
  if h then
    local o = cjson.decode(h)
    o['instance'] = ARGV[3]
    o['expires_at'] = tonumber(ARGV[2])
    local encoded = cjson.encode(o)
    redis.call('HSET', KEYS[2], id, encoded)
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    table.insert(out, id)
    table.insert(out, encoded)
  else
    redis.call('ZREM', KEYS[3], id)
  end
end
return out
"""
