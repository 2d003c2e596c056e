"""The fleet's per-slot concurrency limit, in Redis: core/concurrency.py's AIMD, as Lua scripts.

With a Redis state every process of the fleet feeds one limit per download slot: each overload
any of them sees cuts it (once per round trip of the fleet), each clean response any of them gets
grows it, so the fleet learns an origin's capacity once, from all its traffic, and probes above it
as often as one process would. The algorithm is ConcurrencyControl's, step for step (slow start,
the memory of where it hurt, the cautious probe, the step back), run inside Redis so that
concurrent updates from several processes never interleave; tests/real/test_redis_fleet.py runs
the same sequences of events through both and compares the limits after every step.

State: the hash `<prefix>:limit:<slot>` (v: the limit as a real number, hurt, rep, cut: Redis time
of the last cut, start: in slow start, settled, calm: the limit at the last clean response,
held, over: in slow start, the most in flight, fleet-wide, when a request that went well was sent,
and the fewest when one that failed was; pre, pst, pov: v, start and over before its first
overload, while it has never answered well; hd: in slow start, any outcome came back; lt: in slow
start with nothing heard, the requests the fleet's processes told long unanswered), kept for ten
minutes after it was last used. The user's own limit is the caller's, never stored: a
process started with another CONCURRENT_REQUESTS_PER_DOMAIN applies it at once.
"""

from __future__ import annotations

from scrapy_gateway.core.concurrency import PROBE_SPACING

_NEVER = "1e308"  # "no limit known to hurt" (Lua 5.1's tonumber() cannot read inf)
PROBE_SPACING_LUA = repr(PROBE_SPACING)

_STATE = (
    """
local NEVER = """
    + _NEVER
    + """
local function eff(v)
  return math.floor(v + 0.5)
end

local function load(key, ceiling, initial)
  local h = redis.call('HMGET', key, 'v', 'hurt', 'rep', 'cut', 'start', 'settled', 'calm', 'held', 'over',
    'pre', 'pst', 'pov', 'hd', 'lt')
  local s = {ceiling = ceiling}  -- the caller's: a user who changed the limit gets it at once
  if h[1] then
    s.v, s.hurt, s.rep = math.min(tonumber(h[1]), ceiling), tonumber(h[2]), tonumber(h[3])
    s.cut, s.start, s.settled, s.calm = tonumber(h[4]), tonumber(h[5]), tonumber(h[6]), tonumber(h[7])
    s.held, s.over = tonumber(h[8]) or 0, tonumber(h[9]) or 0
    s.pre, s.pst, s.pov = tonumber(h[10]) or 0, tonumber(h[11]) or 0, tonumber(h[12]) or 0
    s.hd, s.lt = tonumber(h[13]) or 0, tonumber(h[14]) or 0
  else
    s.hurt, s.rep, s.cut, s.settled, s.calm, s.held, s.over = NEVER, 0, -1, 0, NEVER, 0, 0
    s.pre, s.pst, s.pov, s.hd, s.lt = 0, 0, 0, 0, 0
    if initial > 0 and ceiling > initial then
      s.v, s.start = initial, 1
    else
      s.v, s.start = ceiling, 0
    end
  end
  return s
end

local function save(key, s)
  redis.call('HSET', key, 'v', s.v, 'hurt', s.hurt, 'rep', s.rep, 'cut', s.cut, 'start', s.start,
    'settled', s.settled, 'calm', s.calm, 'held', s.held, 'over', s.over, 'pre', s.pre, 'pst', s.pst,
    'pov', s.pov, 'hd', s.hd, 'lt', s.lt)
  redis.call('PEXPIRE', key, 600000)
end

local function recovered(s)
  -- Back at the user's own limit, and nothing remembered (Python forgets the slot).
  s.v, s.start, s.settled, s.hurt, s.rep, s.cut, s.calm = s.ceiling, 0, 0, NEVER, 0, -1, NEVER
  s.held, s.over, s.pre = 0, 0, 0
end

local function failed_at(s, load)
  if load > s.held and (s.over == 0 or load < s.over) then
    s.over = load
  end
end

local function clean(s, caution, load)
  s.hd = 1
  if s.calm >= NEVER and s.pre > 0 and load > 0 and load >= eff(s.hurt) then
    -- The first clean response, sent with the load its first overload said hurt (see _unhurt).
    s.v, s.start, s.over = math.max(s.v, s.pre), s.pst, s.pov
    s.pre = 0
    s.hurt, s.rep, s.cut = NEVER, 0, -1
  end
  local before = eff(s.v)
  local step = 1
  if s.start == 1 and load > s.held then
    s.held = load
  end
  if s.start == 0 then
    step = 1 / math.max(s.v, 1)
    if before + 1 >= eff(s.hurt) then
      step = 1 / math.max(math.max(s.v, 1) * caution, """
    + PROBE_SPACING_LUA
    + """) / 2 ^ s.rep
    end
  end
  s.v = math.min(s.ceiling, s.v + step)
  s.calm = s.v
  local after = eff(s.v)
  if after > eff(s.hurt) then
    s.hurt, s.rep = NEVER, 0
  end
  if after >= s.ceiling then
    if s.start == 1 then
      s.settled = s.settled + 1
    end
    if s.start == 0 or s.settled >= s.ceiling then
      recovered(s)
    end
  end
end

local function overload(s, sent_at, now, minimum, beta, load)
  s.hd = 1
  if sent_at < s.cut then
    return
  end
  if s.calm >= NEVER and s.pre == 0 then
    s.pre, s.pst, s.pov = s.v, s.start, s.over  -- where its first overload found it (see outage)
  end
  local before = eff(s.v)
  if s.start == 1 then
    s.start = 0
    failed_at(s, load)
    local estimate = s.v / 2
    if s.over > 0 then
      estimate = math.max(estimate, s.over - 1)
    end
    s.v = math.max(minimum, math.min(s.v, estimate))
    s.hurt, s.rep = s.v + 1, 0
  elseif before >= eff(s.hurt) then
    s.rep = math.min(s.rep + 1, 4)
    s.v = math.max(minimum, eff(s.hurt) - 1)
  else
    s.rep, s.hurt = 0, s.v
    s.v = math.max(minimum, s.v * beta)
  end
  s.cut = now
end

local function doubtful(s, initial, minimum, load)
  -- A status failure not blamed on the origin: in slow start, above the most in flight that went
  -- well (load 0: not known), no room for another request (ConcurrencyControl.doubtful).
  if s.start == 1 then
    s.hd = 1
    failed_at(s, load)
    if load == 0 or load > s.held then
      s.v = math.max(initial, minimum, s.v - 1)
    end
  end
end

local function late(s, initial, more)
  -- `more` requests than a process told before have waited long, with nothing heard back on the
  -- slot in slow start: their rooms go to the next requests (ConcurrencyControl.late, with the
  -- fleet's count: each process tells how many more of its own wait).
  if s.start == 1 and s.hd == 0 and more > 0 then
    s.lt = s.lt + more
    s.v = math.min(s.ceiling, math.max(s.v, initial + s.lt))
  end
end

local function outage(s)
  -- An outage gate opened: the cuts since the last clean response were the outage's (never
  -- answered well: back to where its first overload found it, ConcurrencyControl.outage).
  if s.calm < NEVER then
    s.v = math.min(s.ceiling, math.max(s.v, s.calm))
  elseif s.pre > 0 then
    s.v, s.start, s.over = math.min(s.ceiling, math.max(s.v, s.pre)), s.pst, s.pov
  end
  s.pre = 0
  s.hurt, s.rep, s.cut = NEVER, 0, -1
  if eff(s.v) >= s.ceiling and s.start == 0 then
    recovered(s)
  end
end

local function reply(s, initial)
  -- The limit and its phase (ConcurrencyControl.phase): in slow start, growing (above its first
  -- limit), probing (at or above the limit that last hurt).
  local growing, probing = 0, 0
  if s.start == 1 and s.v > initial then
    growing = 1
  end
  if eff(s.v) >= eff(s.hurt) then
    probing = 1
  end
  return {eff(s.v), s.start, growing, probing}
end

local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""
)


def _entry(ceiling: int, initial: int, step: str) -> str:
    """A script on the slot's limit KEYS[1]: load it (ceiling and slow start's first limit from
    those ARGV positions), apply `step` to `s`, save it, and return the limit and its phase
    ({limit, starting, growing, probing}, 0 or 1 each: fleet.py's Reply)."""
    return (
        _STATE
        + f"""
local s = load(KEYS[1], tonumber(ARGV[{ceiling}]), tonumber(ARGV[{initial}]))
{step}
save(KEYS[1], s)
return reply(s, tonumber(ARGV[{initial}]))
"""
    )


# ARGV: clean responses, ceiling, caution, initial, the most in flight when one of them was sent
# (0: not known).
CLEAN = _entry(2, 4, "for _ = 1, tonumber(ARGV[1]) do clean(s, tonumber(ARGV[3]), tonumber(ARGV[5])) end")


# Clean responses not reported yet go first (ARGV from `first`: their count, caution, the most in
# flight when one was sent), so that Redis sees the events in the order they happened.
def _cleans_first(first: int) -> str:
    caution, most = f"tonumber(ARGV[{first + 1}])", f"tonumber(ARGV[{first + 2}])"
    return f"for _ = 1, tonumber(ARGV[{first}]) do clean(s, {caution}, {most}) end\n"


# ARGV: sent at (Redis time), ceiling, minimum, beta, initial, in flight when it was sent (0: not
# known), then the pending clean responses (see _cleans_first).
OVERLOAD = _entry(
    2,
    5,
    _cleans_first(7)
    + "overload(s, tonumber(ARGV[1]), server_now(), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6]))",
)

# ARGV: ceiling, initial.
OUTAGE = _entry(1, 2, "outage(s)")

# ARGV: ceiling, initial, minimum, in flight when it was sent (0: not known), then the pending
# clean responses (see _cleans_first).
DOUBTFUL = _entry(1, 2, _cleans_first(5) + "doubtful(s, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))")

# ARGV: ceiling, initial, how many more of this process's requests wait long unanswered than it
# told before, then the pending clean responses (see _cleans_first: one of them means it was heard).
LATE = _entry(1, 2, _cleans_first(4) + "late(s, tonumber(ARGV[2]), tonumber(ARGV[3]))")

# KEYS[2]: the slot's limit (read; created if new; kept while leased): `limit` and `phase` (as
# `reply` returns it) for fleet.py's lease script.
LIMIT_FOR_LEASE = (
    _STATE
    + """
local limit_state = load(KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[4]))
if redis.call('EXISTS', KEYS[2]) == 0 then
  save(KEYS[2], limit_state)
else
  redis.call('PEXPIRE', KEYS[2], 600000)
end
local phase = reply(limit_state, tonumber(ARGV[4]))
local limit = phase[1]
"""
)
