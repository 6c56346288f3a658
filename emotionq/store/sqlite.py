"""SQLite backend (embedded mode): one file, WAL, transactions by BEGIN IMMEDIATE.

Safe for the API and the workers of one host to share; not for several hosts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from emotionq.errors import ConfigurationError, StoreUnavailable
from emotionq.store.base import Store

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS idx (
    name TEXT NOT NULL,
    member TEXT NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (name, member)
);
CREATE INDEX IF NOT EXISTS idx_by_score ON idx (name, score);
"""


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self._conn = conn
        self._now = now

    def get(self, key: str) -> dict | None:
        row = self._conn.execute(
            "SELECT doc FROM docs WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (key, self._now),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, doc: dict, *, ttl: int | None = None) -> None:
        expires = self._now + ttl if ttl else None
        self._conn.execute(
            "INSERT INTO docs (key, doc, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
            " SET doc = excluded.doc, expires_at = COALESCE(excluded.expires_at, docs.expires_at)",
            (key, json.dumps(doc), expires),
        )

    def delete(self, key: str) -> None:
        self._conn.execute("DELETE FROM docs WHERE key = ?", (key,))

    def touch(self, key: str, ttl: int) -> None:
        self._conn.execute("UPDATE docs SET expires_at = ? WHERE key = ?", (self._now + ttl, key))

    def index(self, name: str, member: str, score: float | None) -> None:
        if score is None:
            self._conn.execute("DELETE FROM idx WHERE name = ? AND member = ?", (name, member))
        else:
            self._conn.execute("INSERT INTO idx (name, member, score) VALUES (?, ?, ?) ON CONFLICT (name, member)"
                               " DO UPDATE SET score = excluded.score", (name, member, score))

    def first(self, name: str, limit: int) -> list[tuple[str, float]]:
        return [(m, s) for m, s in self._conn.execute(
            "SELECT member, score FROM idx WHERE name = ? ORDER BY score, member LIMIT ?", (name, limit))]


class SqliteStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        path = urlsplit(url).path
        if not path or path == "/":
            raise ConfigurationError(f"{url!r} names no file; use sqlite:////absolute/path.sqlite3")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def transact(self, fn: Callable[[_SqliteTx], T]) -> T:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(_SqliteTx(conn, time.time()))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path} failed: {exc}") from exc

    def get(self, key: str) -> dict | None:
        try:
            return _SqliteTx(self._conn(), time.time()).get(key)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path} failed: {exc}") from exc

    def get_raw(self, key: str) -> bytes | None:
        rows = self._query("SELECT doc FROM docs WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                           (key, time.time()))
        return rows[0][0].encode() if rows else None

    def due(self, index: str, *, until: float, limit: int) -> list[tuple[str, float]]:
        try:
            rows = self._conn().execute("SELECT member, score FROM idx WHERE name = ? AND score <= ? ORDER BY score "
                                        "LIMIT ?", (index, until, limit)).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path} failed: {exc}") from exc
        return [(member, score) for member, score in rows]

    def rank(self, index: str, member: str) -> int | None:
        row = self._query("SELECT score FROM idx WHERE name = ? AND member = ?", (index, member))
        if not row:
            return None
        return self._query("SELECT COUNT(*) FROM idx WHERE name = ? AND (score < ? OR (score = ? AND member < ?))",
                           (index, row[0][0], row[0][0], member))[0][0]

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path} failed: {exc}") from exc

    def ping(self) -> None:
        self.get("ping")

    def purge_expired(self) -> int:
        conn = self._conn()
        return conn.execute("DELETE FROM docs WHERE expires_at <= ?", (time.time(),)).rowcount

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
