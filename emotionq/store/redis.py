"""Redis backend (distributed mode): documents as JSON strings, transactions by WATCH/MULTI.

For no loss across restarts run Redis with ``appendonly yes`` (``appendfsync
everysec`` or ``always``); the README shows the settings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import Callable, TypeVar

import redis

from emotionq.errors import StoreUnavailable
from emotionq.store.base import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "emotionq:"
INDEX_PREFIX = PREFIX + "index:"  # sorted sets
MAX_CONFLICTS = 100
LARGE_REPLY = 1 << 20  # bytes
# Store.put_if in one step: ARGV[1] keys must exist (their new expiries follow in ARGV), then ARGV[2] keys
# must not; the rest of KEYS are written, each with its document and expiry from ARGV.
PUT_IF = """
local alive, absent = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, alive do if redis.call('EXISTS', KEYS[i]) == 0 then return 0 end end
for i = alive + 1, alive + absent do if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end end
local a = 3
for i = 1, alive do redis.call('EXPIRE', KEYS[i], ARGV[a]); a = a + 1 end
for i = alive + absent + 1, #KEYS do redis.call('SET', KEYS[i], ARGV[a], 'EX', ARGV[a + 1]); a = a + 2 end
return 1
"""


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
            raw = self._pipe.get(PREFIX + key)
            self._seen[key] = json.loads(raw) if raw else None
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
                                pipe.set(PREFIX + key, json.dumps(doc), ex=ttl, keepttl=ttl is None)
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
        return json.loads(raw) if raw else None

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
        return [json.loads(raw) if raw else None for raw in self._call(self._client.mget, [PREFIX + k for k in keys])]

    def put_if(self, puts: dict[str, tuple[dict, int]], *, alive: dict[str, int], absent: Collection[str] = ()) -> bool:
        keys = [PREFIX + k for k in (*alive, *absent, *puts)]
        args = [len(alive), len(absent), *alive.values()]
        for doc, ttl in puts.values():
            args += [json.dumps(doc), ttl]
        return self._call(self._put_if, keys=keys, args=args) == 1

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

    def _safe_url(self) -> str:
        kw = self._client.connection_pool.connection_kwargs
        return f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}"
