"""--max-replay-rate-global: one token bucket in Redis shared by every subscriber.

The bucket is one key (`<prefix>:rate`, a hash of tokens and the time they were counted),
refilled and taken from by one Lua script with the Redis server's clock, so subscribers on
any host agree. To keep it cheap, a subscriber takes tokens in small batches (a tenth of a
second's worth, 1 to 20) and spends them locally; when the bucket is empty it does not ask
again before a batch could have refilled. The rate holds over all subscribers together (a
batch taken is never given back: a subscriber that stops leaves at most one batch unused).
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis

# KEYS: the bucket. ARGV: rate per second, burst (capacity), tokens wanted. Returns the tokens
# granted (0 to wanted).
TAKE = """
redis.replicate_commands()
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then
    tokens, at = burst, now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
return granted
"""


class GlobalRate:
    """`await take()`: may one more replay go now, within `rate_per_s` over all subscribers?
    Raises what Redis raises (the caller decides)."""

    def __init__(self, redis: aioredis.Redis, key: str, rate_per_s: float,
                 burst: float | None = None) -> None:
        self.key = key
        self.rate = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self.batch = max(1, min(20, int(rate_per_s / 10), int(self.burst)))
        self.tokens = 0  # taken from the bucket, not spent yet
        self.asked = 0  # script calls, for tests and benchmarks
        self._empty_until = 0.0
        self._script = redis.register_script(TAKE)

    async def take(self) -> bool:
        if self.tokens:
            self.tokens -= 1
            return True
        now = time.monotonic()
        if now < self._empty_until:
            return False
        self.asked += 1
        granted = int(await self._script(keys=[self.key], args=[self.rate, self.burst,
                                                                 self.batch]))
        if self.tokens:  # another replay refilled meanwhile: keep both
            self.tokens += granted
        else:
            self.tokens = granted
        if not self.tokens:
            self._empty_until = time.monotonic() + self.batch / self.rate
            return False
        self.tokens -= 1
        return True
