"""SQLite-only properties: where the file lives, its pragmas, and two real processes on it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import textwrap
from pathlib import Path

from bots.state import Claim, open_store
from bots.state.memory import MemoryStore
from bots.state.sqlite import SqliteStore
from flows.vocab import Channel, ConversationKey

ALICE = ConversationKey("tan-phu", Channel.ZALO, "1234567890")


async def test_open_store_creates_the_file_under_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    store = await open_store(data_dir=data_dir)
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == data_dir / "state.sqlite3"
        await store.accept(ALICE, "m1", b"x")
    finally:
        await store.close()
    con = sqlite3.connect(data_dir / "state.sqlite3")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert con.execute("SELECT conv, seq, message_id FROM inbox").fetchall() == [
            ("tan-phu:zalo:1234567890", 1, "m1")
        ]
    finally:
        con.close()
    # Reopening keeps what was accepted.
    again = await open_store(data_dir=data_dir)
    try:
        assert await again.pending_keys() == [ALICE]
        assert await again.accept(ALICE, "m1", b"x") is False
    finally:
        await again.close()


async def test_open_store_gives_memory_only_on_request(tmp_path: Path) -> None:
    store = await open_store(memory=True, data_dir=tmp_path)
    assert isinstance(store, MemoryStore)
    assert list(tmp_path.iterdir()) == []


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from bots.state import Claim
    from bots.state.sqlite import SqliteStore
    from flows.vocab import Channel, ConversationKey

    KEY = ConversationKey("tan-phu", Channel.ZALO, "1234567890")

    async def main(path, name, ids):
        store = await SqliteStore.open(path, busy_timeout=30)
        for mid in ids:
            result = await store.accept_and_claim(KEY, mid, mid.encode(), name)
            claim = result if isinstance(result, Claim) else None
            while claim is not None:
                state = json.loads(claim.session or b"[]")
                state.append([claim.items[0].seq, claim.items[0].message_id, name])
                claim = await store.commit(
                    claim, json.dumps(state).encode(), claim.items[0].seq, [mid.encode()]
                )
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3].split(",")))
    """
)


async def test_two_processes_on_one_file_handle_every_message_once(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    await (await SqliteStore.open(path)).close()  # the schema exists before the race
    root = Path(__file__).resolve().parents[2]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            str(path),
            f"proc{n}",
            ",".join(f"p{n}-m{i}" for i in range(30)),
            cwd=root,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(2)
    ]
    for proc in procs:
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    store = await SqliteStore.open(path)
    try:
        assert await store.pending_keys() == []
        assert await store.accept(ALICE, "check", b"x")
        claim = await store.claim(ALICE, "checker")
        assert isinstance(claim, Claim)
        handled = json.loads(claim.session or b"[]")
        assert sorted(mid for _, mid, _ in handled) == sorted(
            f"p{n}-m{i}" for n in range(2) for i in range(30)
        )
        seqs = [seq for seq, _, _ in handled]
        assert seqs == sorted(set(seqs))
        assert {name for _, _, name in handled} <= {"proc0", "proc1"}
        assert len(await store.outbox_read(ALICE)) == 60
        assert claim.version == 60
    finally:
        await store.close()
