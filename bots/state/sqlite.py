"""The embedded SQLite conversation store (the default when no Redis is configured).

One connection, owned by one thread: every operation is one function run there, so writes are
serialised in this process and each costs a single hop off the event loop. Each write is one
`BEGIN IMMEDIATE` transaction, so the lease check and the compare-and-set are atomic even
against another process using the same file (the busy timeout makes it wait its turn).
WAL mode lets readers in other processes proceed while a write is under way.

Tables: `sessions` (session bytes, CAS version, inbox/outbox counters, expiry), `inbox`
(pending items; handled items stay as payload-less rows for de-duplication, the last
`dedupe_window` per conversation), `outbox`, `locks`, `outbox_state` (the sender's lease and the
deferral of the outbox's first item; a row only while either exists).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bots.state import (
    DEDUPE_WINDOW,
    DEFAULT_LEASE,
    DEFAULT_SESSION_TTL,
    DUPLICATE,
    Duplicate,
    conversation_id,
    parse_conversation_id,
)
from bots.state.protocol import Claim, Deferral, OutboxItem, Pending, Sending, StaleClaim
from flows.vocab import ConversationKey

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    conv TEXT PRIMARY KEY,
    data BLOB,
    version INTEGER NOT NULL DEFAULT 0,
    in_seq INTEGER NOT NULL DEFAULT 0,
    out_seq INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS inbox (
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    payload BLOB,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conv, seq),
    UNIQUE (conv, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (conv, seq) WHERE done = 0;
CREATE TABLE IF NOT EXISTS outbox (
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (conv, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (
    conv TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox_state (
    conv TEXT PRIMARY KEY,
    sender TEXT NOT NULL DEFAULT '',
    sender_until REAL NOT NULL DEFAULT 0,
    seq INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL,
    reason TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
"""

_PURGE_EVERY = 600.0  # seconds between purges of idle conversations


class SqliteStore:
    """`bots.state.Store` on a SQLite file. `lease` and `session_ttl` are in seconds.

    `synchronous="NORMAL"` (the default) survives a crash of the process; "FULL" also
    survives a power cut, at one fsync per write."""

    def __init__(
        self,
        path: Path,
        *,
        lease: float = DEFAULT_LEASE,
        session_ttl: float = DEFAULT_SESSION_TTL,
        dedupe_window: int = DEDUPE_WINDOW,
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous={synchronous!r}")
        self.path = path
        self.lease = lease
        self.session_ttl = session_ttl
        self.dedupe_window = dedupe_window
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous.upper()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loa-state")
        self._con: sqlite3.Connection | None = None
        self._next_purge = 0.0

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        lease: float = DEFAULT_LEASE,
        session_ttl: float = DEFAULT_SESSION_TTL,
        dedupe_window: int = DEDUPE_WINDOW,
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
    ) -> SqliteStore:
        """Open (creating the file, its folder and its tables if needed)."""
        store = cls(
            Path(path),
            lease=lease,
            session_ttl=session_ttl,
            dedupe_window=dedupe_window,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
        )
        await store._run(store._connect)
        return store

    # -- the writer thread -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        con.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        con.execute("PRAGMA journal_mode = WAL")
        con.execute(f"PRAGMA synchronous = {self._synchronous}")
        # One script, one transaction: a second process opening the same file at the same
        # moment waits on the busy timeout, then finds every table there.
        try:
            con.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        except BaseException:
            con.close()
            raise
        self._con = con
        self._purge(time.time())

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(con, *args)` in one BEGIN IMMEDIATE transaction."""
        con = self._con
        assert con is not None, "store is closed"
        con.execute("BEGIN IMMEDIATE")
        try:
            result = fn(con, *args)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return result

    def _purge(self, now: float) -> None:
        """Forget conversations idle past the TTL with nothing pending in either direction."""
        self._next_purge = now + _PURGE_EVERY

        def purge(con: sqlite3.Connection) -> None:
            con.execute("UPDATE sessions SET data = NULL WHERE expires_at <= ?", (now,))
            con.execute(
                "DELETE FROM inbox WHERE done = 1 AND conv IN "
                "(SELECT conv FROM sessions WHERE expires_at <= ?)",
                (now,),
            )
            con.execute(
                "DELETE FROM sessions WHERE expires_at <= ? "
                "AND NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.conv = sessions.conv) "
                "AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.conv = sessions.conv)",
                (now,),
            )
            con.execute("DELETE FROM locks WHERE expires_at <= ?", (now,))
            con.execute(
                "DELETE FROM outbox_state WHERE sender_until <= ? AND NOT EXISTS "
                "(SELECT 1 FROM outbox WHERE outbox.conv = outbox_state.conv)",
                (now,),
            )

        self._write(purge)

    def _accept_tx(
        self, con: sqlite3.Connection, conv: str, message_id: str, payload: bytes, now: float
    ) -> bool:
        if con.execute(
            "SELECT 1 FROM inbox WHERE conv = ? AND message_id = ?", (conv, message_id)
        ).fetchone():
            return False
        (seq,) = con.execute(
            "INSERT INTO sessions (conv, in_seq, expires_at) VALUES (?, 1, ?) "
            "ON CONFLICT (conv) DO UPDATE SET in_seq = in_seq + 1, "
            "data = CASE WHEN expires_at <= ? THEN NULL ELSE data END, "
            "expires_at = excluded.expires_at RETURNING in_seq",
            (conv, now + self.session_ttl, now),
        ).fetchone()
        con.execute(
            "INSERT INTO inbox (conv, seq, message_id, payload) VALUES (?, ?, ?, ?)",
            (conv, seq, message_id, payload),
        )
        return True

    def _take_tx(
        self, con: sqlite3.Connection, key: ConversationKey, conv: str, owner: str, now: float
    ) -> Claim | None:
        lock = con.execute("SELECT expires_at FROM locks WHERE conv = ?", (conv,)).fetchone()
        if lock is not None and lock[0] > now:
            return None  # a live lease is exclusive, even against the same owner token
        items = self._pending_tx(con, conv)
        if not items:
            return None
        con.execute(
            "INSERT INTO locks (conv, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT (conv) "
            "DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
            (conv, owner, now + self.lease),
        )
        row = con.execute(
            "SELECT data, version, expires_at FROM sessions WHERE conv = ?", (conv,)
        ).fetchone()
        if row is None:
            return Claim(key, owner, None, 0, items)
        data, version, expires_at = row
        return Claim(key, owner, data if expires_at > now else None, version, items)

    @staticmethod
    def _pending_tx(con: sqlite3.Connection, conv: str) -> tuple[Pending, ...]:
        return tuple(
            Pending(seq, message_id, payload)
            for seq, message_id, payload in con.execute(
                "SELECT seq, message_id, payload FROM inbox WHERE conv = ? AND done = 0 "
                "ORDER BY seq",
                (conv,),
            )
        )

    def _commit_tx(
        self,
        con: sqlite3.Connection,
        claim: Claim,
        session: bytes | None,
        upto_seq: int,
        outbox: Sequence[bytes],
        now: float,
    ) -> tuple[Claim | None, list[OutboxItem]]:
        conv = conversation_id(claim.key)
        lock = con.execute("SELECT owner FROM locks WHERE conv = ?", (conv,)).fetchone()
        row = con.execute("SELECT version, in_seq FROM sessions WHERE conv = ?", (conv,)).fetchone()
        if lock is None or lock[0] != claim.owner or row is None or row[0] != claim.version:
            raise StaleClaim(str(claim.key))
        in_seq = row[1]
        (version, out_seq) = con.execute(
            "UPDATE sessions SET data = ?, version = version + 1, expires_at = ?, "
            "out_seq = out_seq + ? WHERE conv = ? RETURNING version, out_seq",
            (session, now + self.session_ttl, len(outbox), conv),
        ).fetchone()
        con.execute(
            "UPDATE inbox SET done = 1, payload = NULL WHERE conv = ? AND done = 0 AND seq <= ?",
            (conv, upto_seq),
        )
        con.execute(
            "DELETE FROM inbox WHERE conv = ? AND done = 1 AND seq <= ?",
            (conv, in_seq - self.dedupe_window),
        )
        first = out_seq - len(outbox) + 1
        added = [OutboxItem(first + n, payload) for n, payload in enumerate(outbox)]
        if added:
            con.executemany(
                "INSERT INTO outbox (conv, seq, payload) VALUES (?, ?, ?)",
                [(conv, item.seq, item.payload) for item in added],
            )
        items = self._pending_tx(con, conv)
        if items:
            con.execute("UPDATE locks SET expires_at = ? WHERE conv = ?", (now + self.lease, conv))
            return Claim(claim.key, claim.owner, session, version, items), added
        con.execute("DELETE FROM locks WHERE conv = ?", (conv,))
        return None, added

    def _accept_and_claim(
        self, key: ConversationKey, message_id: str, payload: bytes, owner: str
    ) -> Claim | Duplicate | None:
        conv = conversation_id(key)
        now = time.time()

        def tx(con: sqlite3.Connection) -> Claim | Duplicate | None:
            if not self._accept_tx(con, conv, message_id, payload, now):
                return DUPLICATE
            return self._take_tx(con, key, conv, owner, now)

        return self._write(tx)

    def _commit(
        self, claim: Claim, session: bytes | None, upto_seq: int, outbox: Sequence[bytes]
    ) -> tuple[Claim | None, list[OutboxItem]]:
        now = time.time()
        result = self._write(self._commit_tx, claim, session, upto_seq, outbox, now)
        if now >= self._next_purge:
            self._purge(now)
        return result

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        con = self._con
        assert con is not None, "store is closed"
        return con.execute(sql, params).fetchall()

    # -- the protocol ----------------------------------------------------------------------

    async def accept(self, key: ConversationKey, message_id: str, payload: bytes) -> bool:
        return await self._run(
            self._write, self._accept_tx, conversation_id(key), message_id, payload, time.time()
        )

    async def accept_and_claim(
        self, key: ConversationKey, message_id: str, payload: bytes, owner: str
    ) -> Claim | Duplicate | None:
        return await self._run(self._accept_and_claim, key, message_id, payload, owner)

    async def claim(self, key: ConversationKey, owner: str) -> Claim | None:
        return await self._run(
            self._write, self._take_tx, key, conversation_id(key), owner, time.time()
        )

    async def commit(
        self, claim: Claim, session: bytes | None, upto_seq: int, outbox: Sequence[bytes]
    ) -> Claim | None:
        return (await self._run(self._commit, claim, session, upto_seq, outbox))[0]

    async def commit_with_outbox(
        self, claim: Claim, session: bytes | None, upto_seq: int, outbox: Sequence[bytes]
    ) -> tuple[Claim | None, list[OutboxItem]]:
        return await self._run(self._commit, claim, session, upto_seq, outbox)

    async def release(self, claim: Claim) -> None:
        def tx(con: sqlite3.Connection) -> None:
            con.execute(
                "DELETE FROM locks WHERE conv = ? AND owner = ?",
                (conversation_id(claim.key), claim.owner),
            )

        await self._run(self._write, tx)

    async def outbox_read(self, key: ConversationKey, after_seq: int = 0) -> list[OutboxItem]:
        rows = await self._run(
            self._read,
            "SELECT seq, payload FROM outbox WHERE conv = ? AND seq > ? ORDER BY seq",
            (conversation_id(key), after_seq),
        )
        return [OutboxItem(seq, payload) for seq, payload in rows]

    async def outbox_ack(self, key: ConversationKey, upto_seq: int) -> None:
        def tx(con: sqlite3.Connection) -> None:
            con.execute(
                "DELETE FROM outbox WHERE conv = ? AND seq <= ?", (conversation_id(key), upto_seq)
            )

        await self._run(self._write, tx)

    # -- the sender's additions ------------------------------------------------------------

    def _outbox_claim(self, key: ConversationKey, owner: str, lease: float) -> Sending | None:
        conv = conversation_id(key)
        now = time.time()

        def read(con: sqlite3.Connection) -> Sending:
            items = tuple(
                OutboxItem(seq, payload)
                for seq, payload in con.execute(
                    "SELECT seq, payload FROM outbox WHERE conv = ? ORDER BY seq", (conv,)
                )
            )
            row = con.execute(
                "SELECT seq, attempts, not_before, reason, error FROM outbox_state "
                "WHERE conv = ? AND seq IS NOT NULL",
                (conv,),
            ).fetchone()
            deferral = None
            if row is not None and items and row[0] == items[0].seq:
                seq, attempts, not_before, reason, error = row
                not_before = float("inf") if not_before is None else not_before
                deferral = Deferral(seq, attempts, not_before, reason, error)
            return Sending(items, deferral)

        def claim(con: sqlite3.Connection) -> Sending | None:
            row = con.execute(
                "SELECT sender, sender_until FROM outbox_state WHERE conv = ?", (conv,)
            ).fetchone()
            if row is not None and row[0] and row[0] != owner and row[1] > now:
                return None
            con.execute(
                "INSERT INTO outbox_state (conv, sender, sender_until) VALUES (?, ?, ?) "
                "ON CONFLICT (conv) DO UPDATE SET sender = excluded.sender, "
                "sender_until = excluded.sender_until",
                (conv, owner, now + lease),
            )
            return read(con)

        if lease > 0:
            return self._write(claim)
        con = self._con
        assert con is not None, "store is closed"
        con.execute("BEGIN")  # one read snapshot for both tables
        try:
            return read(con)
        finally:
            con.execute("COMMIT")

    @staticmethod
    def _sender_release(
        con: sqlite3.Connection, conv: str, owner: str, lease: float, now: float
    ) -> None:
        if owner:
            if lease > 0:
                con.execute(
                    "UPDATE outbox_state SET sender_until = ? WHERE conv = ? AND sender = ?",
                    (now + lease, conv, owner),
                )
            else:
                con.execute(
                    "UPDATE outbox_state SET sender = '', sender_until = 0 "
                    "WHERE conv = ? AND sender = ?",
                    (conv, owner),
                )
        con.execute(
            "DELETE FROM outbox_state WHERE conv = ? AND seq IS NULL "
            "AND (sender = '' OR sender_until <= ?)",
            (conv, now),
        )

    async def outbox_claim(self, key: ConversationKey, owner: str, lease: float) -> Sending | None:
        return await self._run(self._outbox_claim, key, owner, lease)

    async def outbox_done(
        self, key: ConversationKey, owner: str, upto_seq: int, lease: float = 0.0
    ) -> None:
        conv = conversation_id(key)

        def tx(con: sqlite3.Connection) -> None:
            now = time.time()
            if upto_seq:
                con.execute("DELETE FROM outbox WHERE conv = ? AND seq <= ?", (conv, upto_seq))
                con.execute(
                    "UPDATE outbox_state SET seq = NULL, attempts = 0, not_before = NULL, "
                    "reason = '', error = '' WHERE conv = ? AND seq <= ?",
                    (conv, upto_seq),
                )
            self._sender_release(con, conv, owner, lease, now)

        await self._run(self._write, tx)

    async def outbox_defer(self, key: ConversationKey, owner: str, deferral: Deferral) -> None:
        conv = conversation_id(key)
        not_before = None if deferral.not_before == float("inf") else deferral.not_before

        def tx(con: sqlite3.Connection) -> None:
            if con.execute(
                "SELECT 1 FROM outbox WHERE conv = ? AND seq = ?", (conv, deferral.seq)
            ).fetchone():
                con.execute(
                    "INSERT INTO outbox_state (conv, seq, attempts, not_before, reason, error) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (conv) DO UPDATE SET "
                    "seq = excluded.seq, attempts = excluded.attempts, "
                    "not_before = excluded.not_before, reason = excluded.reason, "
                    "error = excluded.error",
                    (conv, deferral.seq, deferral.attempts, not_before, deferral.reason,
                     deferral.error),
                )
            self._sender_release(con, conv, owner, 0.0, time.time())

        await self._run(self._write, tx)

    async def outbox_due(self, now: float) -> list[ConversationKey]:
        rows = await self._run(
            self._read,
            "SELECT h.conv FROM (SELECT conv, MIN(seq) AS head FROM outbox GROUP BY conv) AS h "
            "LEFT JOIN outbox_state AS s ON s.conv = h.conv "
            "WHERE s.seq IS NULL OR s.seq != h.head OR s.not_before <= ?",
            (now,),
        )
        return [parse_conversation_id(conv) for (conv,) in rows]

    async def pending_keys(self) -> list[ConversationKey]:
        rows = await self._run(self._read, "SELECT DISTINCT conv FROM inbox WHERE done = 0", ())
        return [parse_conversation_id(conv) for (conv,) in rows]

    async def outbox_keys(self) -> list[ConversationKey]:
        rows = await self._run(self._read, "SELECT DISTINCT conv FROM outbox", ())
        return [parse_conversation_id(conv) for (conv,) in rows]

    async def close(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, con.close)
        self._executor.shutdown(wait=True)
