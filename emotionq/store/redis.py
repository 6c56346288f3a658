"""Redis backend (distributed mode): documents as compact JSON strings (msgspec), transactions by
WATCH/MULTI, and for the API's event loop a non-blocking client of the same server (``aio``).

For no loss across restarts run Redis with ``appendonly yes`` (``appendfsync
everysec`` or ``always``); docs/operating/modes.md shows the settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Callable, TypeVar

import msgspec
import redis
import redis.asyncio

from emotionq.errors import StoreUnavailable
from emotionq.store.base import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "emotionq:"
INDEX_PREFIX = PREFIX + "index:"  # sorted sets
MAX_CONFLICTS = 100
LARGE_REPLY = 1 << 20  # bytes
# Store.put_if in one step: ARGV[1] keys must exist (their new expiries follow in ARGV), then ARGV[2] keys
# must not; the rest of KEYS are written, each with its document and expiry from ARGV. ARGV[3]: 0, or
# the place in KEYS of a key whose document is answered once written (AsyncStore.put_if's read).
PUT_IF = """
local alive, absent, read = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, alive do if redis.call('EXISTS', KEYS[i]) == 0 then return false end end
for i = alive + 1, alive + absent do if redis.call('EXISTS', KEYS[i]) == 1 then return false end end
local a = 4
for i = 1, alive do redis.call('EXPIRE', KEYS[i], ARGV[a]); a = a + 1 end
for i = alive + absent + 1, #KEYS do redis.call('SET', KEYS[i], ARGV[a], 'EX', ARGV[a + 1]); a = a + 2 end
if read > 0 then return redis.call('GET', KEYS[read]) end
return 1
"""
# AsyncStore.get_linked: KEYS[1]'s document, and that of ARGV[2] .. its member ARGV[1]. The second key is
# not in KEYS, which a Redis Cluster would refuse: this store is one Redis server (its transactions need
# that too).
GET_LINKED = """
local doc = redis.call('GET', KEYS[1])
if not doc then return {false, false} end
local ok, decoded = pcall(cjson.decode, doc)
local ref = ok and type(decoded) == 'table' and decoded[ARGV[1]]
if type(ref) ~= 'string' then return {doc, false} end
return {doc, redis.call('GET', ARGV[2] .. ref)}
"""
encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder()


def decode(raw: bytes | None) -> dict | None:
    """A stored document (compact JSON as this version writes it, or the spaced JSON of earlier ones)."""
    return _decoder.decode(raw) if raw else None


class _RedisTx:
    def __init__(self, pipe: redis.client.Pipeline) -> None:
        self._pipe = pipe
        self._seen: dict[str, dict | None] = {}
        self.writes: dict[str, tuple[dict | None, int | None]] = {}
        self.indexes: dict[tuple[str, str], float | None] = {}
        self.touches: dict[str, int] = {}

    def get(self, key: str) -> dict | None:
        if key in self.writes:
            return self.writes[key][0]
        if key not in self._seen:
            self._pipe.watch(PREFIX + key)
            self._seen[key] = decode(self._pipe.get(PREFIX + key))
        return self._seen[key]

    def put(self, key: str, doc: dict, *, ttl: int | None = None) -> None:
        self.writes[key] = (doc, ttl)

    def delete(self, key: str) -> None:
        self.writes[key] = (None, None)

    def touch(self, key: str, ttl: int) -> None:
        self.touches[key] = ttl

    def index(self, name: str, member: str, score: float | None) -> None:
        self.indexes[(name, member)] = score

    def first(self, name: str, limit: int) -> list[tuple[str, float]]:
        key = INDEX_PREFIX + name
        self._pipe.watch(key)
        mine = {m: s for (n, m), s in self.indexes.items() if n == name}
        found = {m.decode(): s for m, s in self._pipe.zrange(key, 0, limit + len(mine) - 1, withscores=True)}
        for member, score in mine.items():
            if score is None:
                found.pop(member, None)
            else:
                found[member] = score
        return sorted(found.items(), key=lambda ms: (ms[1], ms[0]))[:limit]


class RedisStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self._client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30,
            retry_on_timeout=True,
        )
        self._put_if = self._client.register_script(PUT_IF)
        self.aio = AsyncRedisStore(url, describe=self._safe_url)

    def transact(self, fn: Callable[[_RedisTx], T]) -> T:
        try:
            for _ in range(MAX_CONFLICTS):
                with self._client.pipeline(transaction=True) as pipe:
                    tx = _RedisTx(pipe)
                    try:
                        result = fn(tx)
                        pipe.multi()
                        for key, (doc, ttl) in tx.writes.items():
                            if doc is None:
                                pipe.delete(PREFIX + key)
                            else:
                                pipe.set(PREFIX + key, encode(doc), ex=ttl, keepttl=ttl is None)
                        for key, ttl in tx.touches.items():
                            if key not in tx.writes:
                                pipe.expire(PREFIX + key, ttl)
                        for (name, member), score in tx.indexes.items():
                            if score is None:
                                pipe.zrem(INDEX_PREFIX + name, member)
                            else:
                                pipe.zadd(INDEX_PREFIX + name, {member: score})
                        pipe.execute()
                        return result
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis at {self._safe_url()} failed: {exc}") from exc
        raise StoreUnavailable(f"gave up after {MAX_CONFLICTS} conflicting writers; retry")

    def get(self, key: str) -> dict | None:
        try:
            raw = self._client.get(PREFIX + key)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis at {self._safe_url()} failed: {exc}") from exc
        return decode(raw)

    def get_raw(self, key: str) -> bytes | None:
        return self._call(self._get_closing_if_large, PREFIX + key)

    def _get_closing_if_large(self, name: str) -> bytes | None:
        """GET; a large reply leaves the connection's reply buffer (hiredis) as large as itself until the
        connection's next reply, so such a connection is closed (and reopened when next taken)."""
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("GET", name)
            raw = conn.read_response()
            if raw is not None and len(raw) > LARGE_REPLY:
                conn.disconnect()
            return raw
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def get_many(self, keys: list[str]) -> list[dict | None]:
        return [decode(raw) for raw in self._call(self._client.mget, [PREFIX + k for k in keys])]

    def put_if(self, puts: dict[str, tuple[dict, int]], *, alive: dict[str, int], absent: Collection[str] = ()) -> bool:
        return self._call(self._put_if, **_put_if_call(puts, alive, absent, read=None)) == 1

    def due(self, index: str, *, until: float, limit: int) -> list[tuple[str, float]]:
        try:
            found = self._client.zrangebyscore(INDEX_PREFIX + index, "-inf", until, start=0, num=limit,
                                               withscores=True)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis at {self._safe_url()} failed: {exc}") from exc
        return [(member.decode(), score) for member, score in found]

    def rank(self, index: str, member: str) -> int | None:
        return self._call(self._client.zrank, INDEX_PREFIX + index, member)

    def _call(self, command, *args, **kwargs):
        try:
            return command(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis at {self._safe_url()} failed: {exc}") from exc

    def ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis at {self._safe_url()} does not answer: {exc}") from exc

    def close(self) -> None:
        self._client.close()
        self.aio.drop()

    def _safe_url(self) -> str:
        kw = self._client.connection_pool.connection_kwargs
        return f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}"


def _put_if_call(puts: dict[str, tuple[dict, int]], alive: dict[str, int], absent: Collection[str],
                 read: str | None) -> dict:
    """The keys and arguments of PUT_IF."""
    names = [*alive, *absent, *puts]
    args = [len(alive), len(absent), names.index(read) + 1 if read is not None else 0, *alive.values()]
    for doc, ttl in puts.values():
        args += [encode(doc), ttl]
    return {"keys": [PREFIX + k for k in names], "args": args}


class AsyncRedisStore:
    """``RedisStore.aio``: the reads and writes of the API's hot paths (a known result reused, a key and its
    client's limits) on the running event loop, with redis-py's asyncio client. Each event loop gets its own
    client (connections belong to the loop that opened them); the API process has one."""

    def __init__(self, url: str, *, describe: Callable[[], str]) -> None:
        self._url, self._describe = url, describe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: redis.asyncio.Redis | None = None

    def _redis(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30,
                retry_on_timeout=True)
            self._put_if, self._get_linked = (self._client.register_script(s) for s in (PUT_IF, GET_LINKED))
        return self._client

    async def _call(self, make):
        try:
            return await make(self._redis())
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis at {self._describe()} failed: {exc}") from exc

    async def get_many(self, keys: list[str]) -> list[dict | None]:
        return [decode(raw) for raw in await self._call(lambda r: r.mget([PREFIX + k for k in keys]))]

    async def get_linked(self, key: str, *, field: str, prefix: str) -> tuple[dict | None, dict | None]:
        first, second = await self._call(lambda r: self._get_linked(keys=[PREFIX + key], args=[field, PREFIX + prefix]))
        return decode(first), decode(second)

    async def put_if(self, puts: dict[str, tuple[dict, int]], *, alive: dict[str, int], absent: Collection[str] = (),
                     read: str) -> dict | None:
        return decode(await self._call(lambda r: self._put_if(**_put_if_call(puts, alive, absent, read=read))))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()

    def drop(self) -> None:
        """Forget the client (its connections close with their loop): for ``RedisStore.close``."""
        self._client = None
