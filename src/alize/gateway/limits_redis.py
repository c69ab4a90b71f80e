"""Redis rate-limit backend: the same sliding windows as ``MemoryRateLimiter``, shared by every
worker process.

The whole check-and-consume is one Lua script, which Redis runs atomically, and it reads the
time from Redis itself (``TIME``) so workers with skewed clocks still agree. Per subject it keeps
a sorted set of admission times (requests), a hash of per-second token sums, and a sorted set of
active leases scored by expiry (concurrency). All keys of one call are touched by one script,
so a Redis Cluster deployment would need the subjects in one hash slot; a single Redis (or a
primary with replicas) is what this targets.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from alize.gateway.limits import (
    DEFAULT_LEASE_TTL_S,
    WINDOW_S,
    Decision,
    Lease,
    Subject,
    SubjectUsage,
    rate_limit_headers,
    rejection,
)

_ACQUIRE = """
local n = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local member = ARGV[3]
local lease_ttl = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sec = math.floor(now / 1000)
local win_s = math.floor(window / 1000)
local admitted, retry, reason, failed = 1, 0, '', 0
local out = {}
for i = 1, n do
  local rk, tk, ak = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local rpm = tonumber(ARGV[5 + 3 * i - 2])
  local tpm = tonumber(ARGV[5 + 3 * i - 1])
  local conc = tonumber(ARGV[5 + 3 * i])
  local wait, why = 0, ''
  local rcount, roldest = 0, -1
  if rpm >= 0 then
    redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - window)
    rcount = redis.call('ZCARD', rk)
    if rcount > 0 then roldest = tonumber(redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')[2]) end
    if rcount >= rpm then
      local oldest = roldest
      if oldest < 0 then oldest = now end
      wait, why = oldest + window - now, 'requests'
    end
  end
  local tsum, toldest = 0, -1
  if tpm >= 0 then
    local h = redis.call('HGETALL', tk)
    local buckets = {}
    for j = 1, #h, 2 do
      local s, v = tonumber(h[j]), tonumber(h[j + 1])
      if s <= sec - win_s then
        redis.call('HDEL', tk, h[j])
      else
        table.insert(buckets, {s, v})
        tsum = tsum + v
      end
    end
    table.sort(buckets, function(a, b) return a[1] < b[1] end)
    if #buckets > 0 then toldest = buckets[1][1] end
    if tokens > tpm then
      wait, why = math.max(wait, window), 'too_large'
    elseif tsum + tokens > tpm then
      local freed, twait = 0, window
      for _, b in ipairs(buckets) do
        freed = freed + b[2]
        if tsum - freed + tokens <= tpm then
          twait = (b[1] + win_s) * 1000 - now
          break
        end
      end
      wait, why = math.max(wait, twait), 'tokens'
    end
  end
  local acount = 0
  if conc >= 0 then
    redis.call('ZREMRANGEBYSCORE', ak, '-inf', now)
    acount = redis.call('ZCARD', ak)
    if acount >= conc then wait, why = math.max(wait, 1000), 'concurrency' end
  end
  if why ~= '' and (admitted == 1 or wait > retry) then
    admitted, retry, reason, failed = 0, wait, why, i - 1
  end
  table.insert(out, rcount)
  table.insert(out, roldest)
  table.insert(out, tsum)
  table.insert(out, toldest)
  table.insert(out, acount)
end
if admitted == 1 then
  for i = 1, n do
    local rk, tk, ak = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
    if tonumber(ARGV[5 + 3 * i - 2]) >= 0 then
      redis.call('ZADD', rk, now, member)
      redis.call('PEXPIRE', rk, window + 1000)
    end
    if tonumber(ARGV[5 + 3 * i - 1]) >= 0 then
      redis.call('HINCRBY', tk, sec, tokens)
      redis.call('PEXPIRE', tk, window + 2000)
    end
    if tonumber(ARGV[5 + 3 * i]) >= 0 then
      redis.call('ZADD', ak, now + lease_ttl, member)
      redis.call('PEXPIRE', ak, lease_ttl + 1000)
    end
  end
end
return {admitted, retry, reason, failed, now, sec, out}
"""

_SETTLE = """
local sec = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local t = redis.call('TIME')
local now_sec = tonumber(t[1])
if sec <= now_sec - math.floor(window / 1000) then return 0 end
for i = 1, #KEYS do
  local v = redis.call('HINCRBY', KEYS[i], sec, delta)
  if v < 0 then redis.call('HSET', KEYS[i], sec, 0) end
  redis.call('PEXPIRE', KEYS[i], window + 2000)
end
return 1
"""


def _limit_arg(value: int | None) -> int:
    return -1 if value is None else value


class RedisRateLimiter:
    """Backend on ``redis.asyncio``; limits are exact across every process sharing the Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str = "alize:rl:",
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        owns_client: bool = False,
    ) -> None:
        self._redis = client
        self._prefix = key_prefix
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._owns_client = owns_client
        self._acquire_script = client.register_script(_ACQUIRE)
        self._settle_script = client.register_script(_SETTLE)

    @classmethod
    def from_url(
        cls, url: str, *, key_prefix: str = "alize:rl:", lease_ttl_s: float = DEFAULT_LEASE_TTL_S
    ) -> RedisRateLimiter:
        client = aioredis.Redis.from_url(url)
        return cls(client, key_prefix=key_prefix, lease_ttl_s=lease_ttl_s, owns_client=True)

    def _keys(self, subject: Subject) -> tuple[str, str, str]:
        base = f"{self._prefix}{subject.key}"
        return f"{base}:req", f"{base}:tok", f"{base}:act"

    async def acquire(self, subjects: Sequence[Subject], *, tokens: int) -> Lease:
        limited = tuple(s for s in subjects if not s.limits.unlimited)
        lease_id = secrets.token_hex(8)
        if not limited:
            return Lease(id=lease_id, subjects=(), reserved_tokens=tokens, bucket_s=0, headers={})
        keys: list[str] = []
        args: list[int | str] = [len(limited), tokens, lease_id, self._lease_ttl_ms, WINDOW_S * 1000]
        for subject in limited:
            keys.extend(self._keys(subject))
            args.extend(
                _limit_arg(v) for v in (subject.limits.rpm, subject.limits.tpm, subject.limits.concurrency)
            )
        reply: list[Any] = await self._acquire_script(keys=keys, args=args)
        admitted, retry_ms, reason, failed, now_ms, second, stats = reply
        usages = tuple(
            SubjectUsage(
                limits=subject.limits,
                requests=int(stats[5 * i]),
                oldest_request_ms=None if int(stats[5 * i + 1]) < 0 else int(stats[5 * i + 1]),
                tokens=int(stats[5 * i + 2]),
                oldest_token_s=None if int(stats[5 * i + 3]) < 0 else int(stats[5 * i + 3]),
                active=int(stats[5 * i + 4]),
            )
            for i, subject in enumerate(limited)
        )
        decision = Decision(
            admitted=bool(admitted),
            now_ms=int(now_ms),
            retry_after_ms=int(retry_ms),
            reason=reason.decode() if isinstance(reason, bytes) else str(reason),
            failed_index=int(failed),
            usages=usages,
        )
        if not decision.admitted:
            raise rejection(decision, tokens)
        return Lease(
            id=lease_id,
            subjects=limited,
            reserved_tokens=tokens,
            bucket_s=int(second),
            headers=rate_limit_headers(decision, tokens),
            _backend=self,
        )

    async def _settle(self, lease: Lease, delta: int) -> None:
        keys = [self._keys(s)[1] for s in lease.subjects if s.limits.tpm is not None]
        if keys:
            await self._settle_script(keys=keys, args=[lease.bucket_s, delta, WINDOW_S * 1000])

    async def _release(self, lease: Lease) -> None:
        keys = [self._keys(s)[2] for s in lease.subjects if s.limits.concurrency is not None]
        if keys:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, lease.id)
                await pipe.execute()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
