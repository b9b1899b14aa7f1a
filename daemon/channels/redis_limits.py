"""Shared rate and domain limits kept in Redis (``redis_url``): the ``LimitStore`` of
``topslot.channels.shared_limits`` (read its docstring for the contract), for deployments that
would rather not put this traffic on PostgreSQL.

Every method is one round trip: a Lua script (atomic in Redis; ``EVALSHA``) or, for ``free``, one
pipeline. Times are Redis's clock (``TIME``), the one clock every node shares. Keys live under
``<redis_key_prefix>:limits:`` and expire on their own when unused (an hour for a bucket, a lease
after its ``ttl``), so nothing needs cleaning up.

- A bucket is a hash ``{tokens, at}``; the take script does ``ratelimit.refill`` exactly.
- A key's slots are a sorted set of lease members (``<holder>:<call>:<n>``) scored by their expiry:
  the grab script, for every key asked for at once, drops the expired ones and adds members only
  while fewer than ``limit`` remain.

Needs the ``redis`` package (``pip install 'topslot[redis]'``); ``check_available`` says so in one
line at start-up when it is missing.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from topslot.errors import TopslotError

TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, take = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(saved[1]), tonumber(saved[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate) - take
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', math.max(at, now)))
redis.call('EXPIRE', KEYS[1], 3600)
return string.format('%.17g', tokens)
"""

GIVE_BACK = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens ~= nil then
  tokens = math.min(tonumber(ARGV[1]), tokens + tonumber(ARGV[2]))
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens))
end
return 0
"""

GRAB = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, ttl, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local expires = string.format('%.17g', now + ttl)
local got = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.17g', now))
  local free = limit - redis.call('ZCARD', key)
  local n = math.min(free, tonumber(ARGV[3 + i]))
  for j = 1, n do
    local name = member .. ':' .. i .. '.' .. j
    redis.call('ZADD', key, expires, name)
    table.insert(got, name)
  end
  if n > 0 then redis.call('PEXPIRE', key, math.ceil(ttl * 1000) + 1000) end
  table.insert(got, '')
end
return got
"""

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', string.format('%.17g', now + ttl), ARGV[i + 1])
  redis.call('PEXPIRE', key, math.ceil(ttl * 1000) + 1000)
end
return 0
"""


def check_available() -> None:
    """Raise ``TopslotError`` (one line) when ``redis_url`` is set but the package is missing (the
    settings check it first, at the setting)."""
    try:
        import redis.asyncio  # noqa: F401
    except ImportError:
        raise TopslotError(
            "redis_url is set but the redis package is not installed: pip install 'topslot[redis]'"
        ) from None


class RedisLimitStore:
    """The shared limits in the Redis at ``url``, under ``prefix``."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = "topslot"):
        check_available()
        import redis.asyncio as aioredis

        self._client: Any = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._prefix = f"{prefix}:limits"
        self._take = self._client.register_script(TAKE)
        self._give_back = self._client.register_script(GIVE_BACK)
        self._grab = self._client.register_script(GRAB)
        self._renew = self._client.register_script(RENEW)
        self._members = itertools.count()
        self.round_trips = 0

    def _bucket(self, name: str) -> str:
        return f"{self._prefix}:rate:{name}"

    def _slots(self, scope: str, key: str) -> str:
        return f"{self._prefix}:slots:{scope}:{key}"

    async def take(self, name: str, count: int, rate: float, burst: float) -> float:
        self.round_trips += 1
        balance = await self._take(keys=[self._bucket(name)], args=[repr(rate), repr(burst), count])
        return float(balance)

    async def give_back(self, name: str, count: int, burst: float) -> None:
        self.round_trips += 1
        await self._give_back(keys=[self._bucket(name)], args=[repr(burst), count])

    async def grab(
        self, scope: str, wanted: Mapping[str, int], limit: int, holder: str, ttl: float
    ) -> dict[str, list[Hashable]]:
        if not wanted:
            return {}
        self.round_trips += 1
        keys = list(wanted)
        member = f"{holder}:{next(self._members)}"  # each slot: <holder>:<call>:<key>.<slot>
        answer = await self._grab(
            keys=[self._slots(scope, key) for key in keys], args=[limit, repr(ttl), member, *wanted.values()]
        )
        got: dict[str, list[Hashable]] = {}
        names = iter(answer)
        for key in keys:  # each key's members, then an empty string
            for name in iter(lambda: next(names), b""):
                got.setdefault(key, []).append(name.decode() if isinstance(name, bytes) else name)
        return got

    async def free(self, scope: str, slots: Sequence[tuple[str, Hashable]], holder: str) -> None:
        mine = [(key, str(member)) for key, member in slots if str(member).rsplit(":", 2)[0] == holder]
        if not mine:
            return
        self.round_trips += 1
        async with self._client.pipeline(transaction=False) as pipe:
            for key, member in mine:
                pipe.zrem(self._slots(scope, key), member)
            await pipe.execute()

    async def renew(self, holder: str, held: Sequence[tuple[str, str, Hashable]], ttl: float) -> None:
        if not held:
            return
        self.round_trips += 1
        keys = [self._slots(scope, key) for scope, key, _ in held]
        await self._renew(keys=keys, args=[repr(ttl), *(str(member) for _, _, member in held)])

    async def close(self) -> None:
        await self._client.aclose()
