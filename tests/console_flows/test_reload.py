"""Reloading flows in running processes (bots/reload.py): two runtimes sharing Redis and the
records database — reload on one, the other switches; a broken bundle is refused with its
problems and nothing changes; a person half-way through a flow stays on their question."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from bots.records.models import AuditEntry, Organisation
from bots.reload import AUDIT_ACTION, read_current
from bots.runtime import Runtime
from bots.settings import Settings, from_env
from flows.vocab import Channel, InboundKind
from tests.bots.conftest import Recorder, inbound

FORM = """\
organisations:
  thu:
    name: Đơn vị thử
    channels: {{webchat: {{}}}}
    menu: khao_sat
    children:
      {unit}:
        name: Chi đoàn {unit}
flows:
  khao_sat:
    title: Khảo sát
    steps:
      - ask: Câu một?
        expect: text
        save: mot
      - ask: {second}
        expect: text
        save: hai
      - end: "Xong: {{mot}} / {{hai}}"
"""
BROKEN = """\
organisations:
  thu:
    name: Đơn vị thử
    menu: khao_sat
flows:
  khao_sat:
    title: Khảo sát
    steps:
      - ask: Câu một?
        expect: text
        save: mot
        goto: khong_co
"""


def write(path: Path, second: str, unit: str = "cd-a") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FORM.format(second=second, unit=unit), encoding="utf-8")
    return path


def settings_for(config: Path, data: Path, **env: str) -> Settings:
    return from_env({"LOA_CONFIG": str(config), "LOA_DATA_DIR": str(data), **env})


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> float:
    """Wait for `condition`; returns how long it took (fails the test at the deadline)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


class Pair:
    def __init__(self) -> None:
        self.runtimes: list[Runtime] = []

    async def start(self, settings: Settings, poll: float | None = None) -> tuple[Runtime,
                                                                                  Recorder]:
        recorder = Recorder()
        runtime = Runtime(settings, adapters={Channel.TELEGRAM: recorder}, sweep_every=0)
        if poll is not None:
            runtime.reloader.poll_every = poll
        await runtime.start()
        self.runtimes.append(runtime)
        return runtime, recorder

    async def stop(self) -> None:
        for runtime in reversed(self.runtimes):
            await runtime.stop()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    yield p
    await p.stop()


async def test_reload_on_one_process_switches_the_other_through_redis(
    tmp_path: Path, pair: Pair, redis_url: str, redis_prefix: str
) -> None:
    config = write(tmp_path / "conf" / "flows.yaml", "Câu hai (bản cũ)?")
    settings = settings_for(config, tmp_path / "var", LOA_REDIS_URL=redis_url,
                            LOA_REDIS_PREFIX=redis_prefix)
    a, _ = await pair.start(settings)
    b, on_b = await pair.start(settings)
    old = a.version
    assert b.version == old
    # Both polls are 30 s apart with Redis: a switch within seconds is the pub/sub message.
    assert b.reloader.poll_every == 30.0

    # Someone is half-way through the form on process B.
    await b.pipeline.process(inbound("u1", kind=InboundKind.START))
    await b.pipeline.process(inbound("u1", "một"))
    assert on_b.texts("u1")[-1] == "Câu hai (bản cũ)?"

    write(config, "Câu hai (bản mới)?", unit="cd-b")
    result = await a.reloader.reload(actor="organiser:1")
    assert result.ok and result.changed and result.previous == old
    assert a.version == result.version != old
    await until(lambda: b.version == result.version)

    # The person half-way finishes on the version they began; a newcomer gets the new one.
    await b.pipeline.process(inbound("u1", "hai"))
    assert on_b.texts("u1")[-1] == "Xong: một / hai"
    await b.pipeline.process(inbound("u2", kind=InboundKind.START))
    await b.pipeline.process(inbound("u2", "một"))
    assert on_b.texts("u2")[-1] == "Câu hai (bản mới)?"

    # The records say which version is current, who made it so, and the tree follows it.
    current = await read_current(a.db)
    assert current is not None and current.version == result.version
    assert current.by == "organiser:1"
    async with a.db.reads() as session:
        slugs = set((await session.scalars(select(Organisation.slug))).all())
        rows = (await session.scalars(
            select(AuditEntry).where(AuditEntry.action == AUDIT_ACTION)
        )).all()
    assert {"thu", "cd-a", "cd-b"} <= slugs  # removed nodes keep their row (reports skip them)
    assert [(r.actor, r.detail["version"], r.detail["previous"]) for r in rows] == [
        ("organiser:1", result.version, old)
    ]

    # A broken file is refused with its problems; nothing changes anywhere.
    config.write_text(BROKEN, encoding="utf-8")
    refused = await a.reloader.reload(actor="organiser:1")
    assert not refused.ok and not refused.changed
    assert refused.version == refused.previous == result.version == a.version
    assert any(line.startswith(f"{config}:12:15: ") and "khong_co" in line
               for line in refused.problems), refused.problems
    await asyncio.sleep(0.3)
    assert b.version == result.version
    current = await read_current(b.db)
    assert current is not None and current.version == result.version
    await b.pipeline.process(inbound("u3", kind=InboundKind.START))
    assert on_b.texts("u3")[-1] == "Câu một?"


async def test_without_redis_the_other_process_polls_the_records(
    tmp_path: Path, pair: Pair
) -> None:
    config = write(tmp_path / "conf" / "flows.yaml", "Câu hai?")
    settings = settings_for(config, tmp_path / "var")
    assert settings.redis_url is None
    a, _ = await pair.start(settings, poll=0.2)
    b, _ = await pair.start(settings, poll=0.2)
    write(config, "Câu hai, sửa lại?")
    result = await a.reloader.reload()
    assert result.changed
    waited = await until(lambda: b.version == result.version)
    assert waited < 2.0


async def test_on_another_machine_the_own_file_is_used_when_it_has_the_published_content(
    tmp_path: Path, pair: Pair, redis_url: str, redis_prefix: str
) -> None:
    """Separate data dirs (no shared archive), shared records and Redis: each machine keeps its
    own copy of the flows; a machine whose copy differs keeps its version and says so."""
    shared_db = f"sqlite+aiosqlite:///{tmp_path / 'shared.sqlite3'}"
    env = {"LOA_REDIS_URL": redis_url, "LOA_REDIS_PREFIX": redis_prefix,
           "LOA_DATABASE_URL": shared_db}
    one = write(tmp_path / "m1" / "flows.yaml", "Câu hai?")
    two = write(tmp_path / "m2" / "flows.yaml", "Câu hai?")
    three = write(tmp_path / "m3" / "flows.yaml", "Câu hai?")
    a, _ = await pair.start(settings_for(one, tmp_path / "v1", **env))
    b, _ = await pair.start(settings_for(two, tmp_path / "v2", **env))
    c, _ = await pair.start(settings_for(three, tmp_path / "v3", **env))
    old = a.version
    assert b.version == c.version == old

    write(one, "Câu hai (mới)?")
    write(two, "Câu hai (mới)?")  # deployed to machine 2, not to machine 3
    result = await a.reloader.reload()
    await until(lambda: b.version == result.version)
    await until(lambda: c.reloader.behind == result.version)
    assert c.version == old
    write(three, "Câu hai (mới)?")
    await c.reloader.check_now()
    assert c.version == result.version and c.reloader.behind is None


async def test_a_restart_follows_the_published_version_unless_its_file_changed_since(
    tmp_path: Path, pair: Pair
) -> None:
    config = write(tmp_path / "conf" / "flows.yaml", "Câu hai?")
    settings = settings_for(config, tmp_path / "var")
    a, _ = await pair.start(settings, poll=0)
    first = a.version
    write(config, "Câu hai (bản 2)?")
    second = (await a.reloader.reload()).version
    await pair.stop()
    pair.runtimes.clear()

    # The file goes back to the first content, written *before* the last reload (a stale copy
    # restored from backup): the restarted process follows what was published.
    write(config, "Câu hai?")
    old = time.time() - 3600
    os.utime(config, (old, old))
    b, recorder = await pair.start(settings, poll=0)
    assert b.version == second != first
    await b.pipeline.process(inbound("u1", kind=InboundKind.START))
    await b.pipeline.process(inbound("u1", "x"))
    assert recorder.texts("u1")[-1] == "Câu hai (bản 2)?"
    await pair.stop()
    pair.runtimes.clear()

    # Edited after the last publication: a restart deploys the file, as it always did.
    write(config, "Câu hai (bản 3)?")
    c, _ = await pair.start(settings, poll=0)
    assert c.version not in (first, second)
    current = await read_current(c.db)
    assert current is not None and current.version == c.version and current.by == "start"
