"""A teacher's slots counted in Redis, so that one limit holds for every worker process on every machine.

Each process holds its slots under a lease that its pump thread renews every `renew` seconds; a process
that dies stops renewing, and the next sync of any other process hands its slots back (within `lease` +
`renew` seconds). The pump batches a process's releases, its count of waiting calls per share (run) and its
endpoint failures into one Lua script call, which hands out free slots max-min fairly: to the share that
holds the fewest, then to the process that holds the fewest. When the fairest waiter is in another process,
the slot is left free and that process is told over pub/sub to come and take it.

Keys (one set per teacher budget): <key>:exp zset process -> lease expiry (ms); <key>:held hash
"process|share|endpoint" -> slots; <key>:want hash "process|share" -> waiting calls; <key>:down hash
endpoint -> ms until it is tried again, "<endpoint>:n" -> failures in a row, "<endpoint>:error" -> last error.
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter

from generation.sdg.teachers.base import TeacherError
from generation.sdg.teachers.limits import Backoff, Budget, EndpointState, Slot

logger = logging.getLogger(__name__)

_SYNC = """
local exp, held, want, down, channel = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = a.proc
redis.call('ZADD', exp, string.format('%d', now + a.lease), me)
local dead = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
if #dead > 0 then
  local gone = {}
  for _, p in ipairs(dead) do gone[p] = true end
  redis.call('ZREMRANGEBYSCORE', exp, '-inf', now)
  for _, h in ipairs({held, want}) do
    for _, f in ipairs(redis.call('HKEYS', h)) do
      if gone[string.match(f, '^([^|]*)|')] then redis.call('HDEL', h, f) end
    end
  end
end
for _, r in ipairs(a.release) do
  local f = me .. '|' .. r[1] .. '|' .. r[2]
  if redis.call('HINCRBY', held, f, -r[3]) <= 0 then redis.call('HDEL', held, f) end
end
local n = #a.limits
for _, e in ipairs(a.failed) do
  local i = tostring(e[1])
  local fails = redis.call('HINCRBY', down, i .. ':n', 1)
  local wait = math.min(a.backoff_max, a.backoff * 2 ^ (fails - 1))
  redis.call('HSET', down, i, string.format('%d', now + math.floor(wait)), i .. ':error', e[2])
end
for _, i in ipairs(a.ok) do
  redis.call('HDEL', down, tostring(i), tostring(i) .. ':n', tostring(i) .. ':error')
end
local used, share_held, proc_held = {}, {}, {}
for i = 1, n do used[i] = 0 end
local flat = redis.call('HGETALL', held)
for k = 1, #flat, 2 do
  local p, s, i = string.match(flat[k], '^([^|]*)|(.*)|(%d+)$')
  local c = tonumber(flat[k + 1])
  i = tonumber(i) + 1
  if i <= n then used[i] = used[i] + c end
  share_held[s] = (share_held[s] or 0) + c
  proc_held[p] = (proc_held[p] or 0) + c
end
local up, any_up = {}, false
for i = 1, n do
  local untilms = redis.call('HGET', down, tostring(i - 1))
  up[i] = (not untilms) or tonumber(untilms) <= now
  any_up = any_up or up[i]
end
if not any_up then for i = 1, n do up[i] = true end end
local mine = {}
for s, c in pairs(a.want) do if c > 0 then mine[s] = c end end
local others, before = {}, 0
flat = redis.call('HGETALL', want)
for k = 1, #flat, 2 do
  local p, s = string.match(flat[k], '^([^|]*)|(.*)$')
  if p ~= me then others[#others + 1] = {p, s} else before = before + tonumber(flat[k + 1]) end
end
local grants, blocked = {}, false
while true do
  local best
  for i = 1, n do
    if up[i] and used[i] < a.limits[i] and (not best or used[i] * a.limits[best] < used[best] * a.limits[i]) then
      best = i
    end
  end
  if not best then break end
  local pick, ph
  for s, _ in pairs(mine) do
    local h = share_held[s] or 0
    if not pick or h < ph or (h == ph and s < pick) then pick, ph = s, h end
  end
  if not pick then break end
  local mh = proc_held[me] or 0
  for _, o in ipairs(others) do
    local oh, op = share_held[o[2]] or 0, proc_held[o[1]] or 0
    if oh < ph or (oh == ph and op + a.margin < mh) then blocked = true break end
  end
  if blocked then break end
  used[best] = used[best] + 1
  share_held[pick] = ph + 1
  proc_held[me] = (proc_held[me] or 0) + 1
  mine[pick] = mine[pick] - 1
  if mine[pick] == 0 then mine[pick] = nil end
  redis.call('HINCRBY', held, me .. '|' .. pick .. '|' .. (best - 1), 1)
  grants[#grants + 1] = pick
  grants[#grants + 1] = best - 1
end
for _, f in ipairs(redis.call('HKEYS', want)) do
  if string.sub(f, 1, #me + 1) == me .. '|' then redis.call('HDEL', want, f) end
end
local after = 0
for s, c in pairs(mine) do
  redis.call('HSET', want, me .. '|' .. s, c)
  after = after + c
end
-- Wake the others when a slot is left for them, or when this process starts waiting (so that one handing
-- its slots on locally, believing nobody else waits, comes to share them).
if (#others > 0 and (blocked or #a.release > 0 or #dead > 0)) or after > before then
  redis.call('PUBLISH', channel, '1')
end
local states = {}
for i = 1, n do
  local untilms = redis.call('HGET', down, tostring(i - 1))
  local fails = redis.call('HGET', down, tostring(i - 1) .. ':n')
  states[i] = {untilms and math.max(0, tonumber(untilms) - now) or 0, tonumber(fails or '0')}
end
-- The shares this process may pass a freed slot on to its own next call without asking again: those that
-- no other process's waiting call deserves more (by the order above).
local keep = {}
local mh = proc_held[me] or 0
local candidates = {}
for s, _ in pairs(share_held) do candidates[s] = true end
for s, _ in pairs(a.want) do candidates[s] = true end
for s, _ in pairs(candidates) do
  local h, ok = share_held[s] or 0, true
  for _, o in ipairs(others) do
    local oh, op = share_held[o[2]] or 0, proc_held[o[1]] or 0
    if (o[2] ~= s and oh < h - 1) or (o[2] == s and op + a.margin < mh) then ok = false break end
  end
  if ok then keep[#keep + 1] = s end
end
return {grants, cjson.encode(states), keep}
"""


def budget_key(model: str, urls: list[str]) -> str:
    import hashlib

    digest = hashlib.sha256(json.dumps([model, urls]).encode()).hexdigest()[:24]
    return f"labweb:teacher-budget:{digest}"


class RedisBudget(Budget):
    """A teacher's slots counted in Redis for every process. `client` is a redis.Redis (sync)."""

    def __init__(
        self,
        client,
        key: str,
        limits: list[int],
        *,
        lease: float = 5.0,
        renew: float = 1.0,
        backoff: Backoff | None = None,
    ):
        super().__init__(limits)
        self.client, self.key = client, key
        self.lease, self.renew = lease, renew
        self.backoff = backoff or Backoff()
        self.proc = _process_name()
        self._keys = [f"{key}:{name}" for name in ("exp", "held", "want", "down", "wake")]
        self._sync = client.register_script(_SYNC)
        self._releases: Counter = Counter()
        self._failed: list[tuple[int, str]] = []
        self._ok: set[int] = set()
        self._holding = 0
        self._failures: list[int] = [0] * len(self.limits)  # as of the last sync, per endpoint
        self._synced_wants: dict[str, int] = {}
        self._keep: set[str] = set()  # shares whose freed slots pass on locally (see the script's end)
        self._poked = False
        self._last_sync = 0.0
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._pid: int | None = None
        self._threads: list[threading.Thread] = []

    # --- the calls' side, on their event loops -------------------------------------------------------------

    def _queued(self) -> None:
        self._start()
        self._wake.set()

    def _limits_changed(self) -> None:
        self._wake.set()

    def release(self, slot: Slot) -> None:
        with self._lock:
            if slot.share in self._keep and not self._failures[slot.endpoint]:
                # No other process waits with a better claim: the slot passes to this process's next call of
                # the same run without asking Redis (the counts there stay the same).
                waiter = self._waiters.pop(slot.share)
                if waiter is not None:
                    self._hand(waiter, slot)
                    return
            self._releases[(slot.share, slot.endpoint)] += 1
            self._holding -= 1
        self._wake.set()

    def endpoint_failed(self, index: int, error: str) -> None:
        with self._lock:
            self._failed.append((index, error[:500]))
            self._failures[index] += 1  # until the pump hears the count
        self._wake.set()

    def endpoint_ok(self, index: int) -> None:
        if self._failures[index]:
            with self._lock:
                self._ok.add(index)
            self._wake.set()

    def stop(self) -> None:
        """Stop the pump without giving anything back: what a process that dies does (for tests)."""
        self._stopped.set()
        self._wake.set()

    # --- the pump ----------------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._pid == os.getpid() and all(thread.is_alive() for thread in self._threads):
            return
        with self._start_lock:
            if self._pid == os.getpid() and all(thread.is_alive() for thread in self._threads):
                return
            if self._pid is not None:  # a forked child (a prefork pool): a process of its own in Redis
                self.proc = _process_name()
            self._pid = os.getpid()
            self._threads = [
                threading.Thread(target=self._pump, name="labweb-budget-pump", daemon=True),
                threading.Thread(target=self._listen, name="labweb-budget-listen", daemon=True),
            ]
            for thread in self._threads:
                thread.start()

    def _listen(self) -> None:
        while not self._stopped.is_set():
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._keys[4])
                while not self._stopped.is_set():
                    if pubsub.get_message(timeout=self.renew) is not None:
                        self._poked = True
                        self._wake.set()
            except Exception:  # noqa: BLE001 - Redis went away: the pump's timer keeps things moving
                self._stopped.wait(self.renew)

    def _pump(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self.renew)
            self._wake.clear()
            if self._stopped.is_set():
                return
            with self._lock:
                poked, self._poked = self._poked, False
                due = (wants := self._waiters.counts()) or self._holding
                due = due and time.monotonic() - self._last_sync >= self.renew * 0.8  # the lease, renewed
                news = self._releases or self._failed or self._ok or wants != self._synced_wants
                if not (news or due or (poked and wants)):
                    continue  # a wake-up from another process is news only to one that waits
                releases, self._releases = self._releases, Counter()
                failed, self._failed = self._failed, []
                ok, self._ok = self._ok, set()
                self._last_sync = time.monotonic()
            try:
                grants, failures, keep = self._call(releases, wants, failed, ok)
            except Exception as error:  # noqa: BLE001 - no Redis: the waiting calls fail, to be retried
                logger.warning("The teacher budget %s cannot sync: %s", self.key, error)
                with self._lock:
                    self._releases.update(releases)
                    self._failed = failed + self._failed
                    self._ok |= ok
                    self._fail_waiters(f"The shared teacher budget cannot reach Redis: {error}")
                self._stopped.wait(min(self.renew, 0.5))
                continue
            with self._lock:
                self._synced_wants = wants
                self._failures = failures
                self._keep = keep
                for share, index in grants:
                    waiter = self._waiters.pop(share)
                    if waiter is None:  # it was cancelled meanwhile
                        self._releases[(share, index)] += 1
                        self._wake.set()
                    else:
                        self._holding += 1
                        self._hand(waiter, Slot(index, share))

    def _call(self, releases: Counter, wants: dict, failed: list, ok: set) -> tuple[list, list[int], set[str]]:
        args = {
            "proc": self.proc,
            "lease": int(self.lease * 1000),
            "limits": self.limits,
            "release": [[share, index, n] for (share, index), n in releases.items()],
            "want": wants or {"": 0},  # cjson encodes an empty table as an object either way
            "failed": [list(entry) for entry in failed],
            "ok": sorted(ok),
            "backoff": int(self.backoff.base * 1000),
            "backoff_max": int(self.backoff.max * 1000),
            # Between processes of one run, slots move only past this imbalance: a slot passed back and forth
            # costs each side a sync.
            "margin": max(1, sum(self.limits) // 16),
        }
        flat, states, keep = self._sync(keys=self._keys, args=[json.dumps(args)])
        shares = [share.decode() if isinstance(share, bytes) else share for share in flat[0::2]]
        grants = list(zip(shares, map(int, flat[1::2]), strict=True))
        keep = {share.decode() if isinstance(share, bytes) else share for share in keep}
        return grants, [int(n) for _, n in json.loads(states)], keep

    def _fail_waiters(self, message: str) -> None:
        for share in list(self._waiters.counts()):
            while (waiter := self._waiters.pop(share)) is not None:
                waiter.loop.call_soon_threadsafe(_fail, waiter.future, TeacherError(message, retryable=True))

    def states(self) -> list[EndpointState]:
        return budget_states(self.client, self.key, self.limits)


def _process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _fail(future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def budget_states(client, key: str, limits: list[int]) -> list[EndpointState]:
    """Each endpoint's slots in use across every process, and whether it is out after failing."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.time()
        pipe.zrangebyscore(f"{key}:exp", "-inf", "+inf", withscores=True)
        pipe.hgetall(f"{key}:held")
        pipe.hgetall(f"{key}:down")
        (seconds, micros), procs, held, down = pipe.execute()
    except Exception:  # noqa: BLE001 - the page says it does not know rather than failing
        return [EndpointState(limit, known=False) for limit in limits]
    now = seconds * 1000 + micros // 1000
    alive = {proc.decode() for proc, expiry in procs if expiry > now}
    used = [0] * len(limits)
    for name, count in held.items():
        proc, _, index = name.decode().rpartition("|")
        proc = proc.split("|", 1)[0]
        if proc in alive and int(index) < len(limits):
            used[int(index)] += int(count)
    down = {name.decode(): value.decode() for name, value in down.items()}
    return [
        EndpointState(
            limit,
            used[i],
            max(0.0, (float(down[str(i)]) - now) / 1000) if str(i) in down else 0.0,
            int(down.get(f"{i}:n", 0)),
            down.get(f"{i}:error", ""),
        )
        for i, limit in enumerate(limits)
    ]


_BUDGETS: dict[tuple[str, str], RedisBudget] = {}
_CLIENTS: dict[str, object] = {}
_REGISTRY_LOCK = threading.Lock()


def redis_client(url: str):
    import redis

    with _REGISTRY_LOCK:
        client = _CLIENTS.get(url)
        if client is None:
            client = _CLIENTS[url] = redis.Redis.from_url(
                url, health_check_interval=30, socket_connect_timeout=2, socket_timeout=5
            )
        return client


def redis_budget(url: str, key: str, limits: list[int], **options) -> RedisBudget:
    """The process's shared budget for `key` on the Redis at `url`, made on first use."""
    client = redis_client(url)
    with _REGISTRY_LOCK:
        found = _BUDGETS.get((url, key))
        if found is None or len(found.limits) != len(limits) or found._stopped.is_set():
            found = _BUDGETS[(url, key)] = RedisBudget(client, key, limits, **options)
        elif found.limits != [max(1, int(limit)) for limit in limits]:
            found.set_limits(limits)
        return found
