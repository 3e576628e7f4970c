"""Reloading the flows without a restart, in every process of a deployment.

A reload — the console's button, `loa reload`, or SIGHUP to `loa serve` — loads flows.yaml,
runs check, and refuses the bundle with every problem (`file:line:column: message` + hint) if
anything fails: the live version stays. A bundle that passes is archived by content hash
(`<data dir>/bundles/<hash>/`, bots/bundles.py), becomes live in this process and is
*published*:

- the records database holds the deployment's current version (`channel_cursors` row
  `flows:current`: `{"version", "by"}` with the time) — the one source of truth;
- with Redis, a message on `<prefix>flows` tells every process to look at it now; without
  Redis, each process looks every few seconds (`POLL_EVERY`), and with Redis still every
  `POLL_WITH_REDIS` seconds, in case a message was missed while Redis reconnected.

A process that sees another current version *follows* it: from the archive (a shared data dir)
or, on another machine, from its own flows file when that has the same content hash; otherwise
it keeps its version, logs why and reports it (`behind`). Conversations in progress keep the
flow version they began on (the engine's archive); new ones use the new version. After a
reload the records' organisation tables are synchronised (bots.reports.organisations).

At start a process reconciles with the published version: none yet, or a flows file edited
after the last publication (a restart deploys the file, as it always did) → it publishes its
own; otherwise it follows the published one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bots.records.models import AuditEntry, ChannelCursor
from bots.runtime import Flows, FlowsInvalid, load_flows

if TYPE_CHECKING:
    from bots.runtime import Runtime

log = logging.getLogger("loa.reload")

CURRENT = "flows:current"  # the channel_cursors row naming the live version
CHANNEL = "flows"  # the Redis pub/sub channel, under the store's key prefix
POLL_EVERY = 3.0  # seconds between looks at the current version without Redis
POLL_WITH_REDIS = 30.0  # ... and with Redis (a safety net under pub/sub)
AUDIT_ACTION = "flows_reloaded"

CHANNELS_CHANGED = (
    "Cấu hình kênh nhắn tin (channels) đã thay đổi: kịch bản mới đã áp dụng, nhưng kênh mới "
    "hoặc mã kênh mới chỉ có hiệu lực sau khi khởi động lại máy chủ."
)


@dataclass(frozen=True, slots=True)
class Published:
    """The deployment's current flow version as the records hold it."""

    version: str
    at: datetime
    by: str


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    version: str  # the live version after the attempt
    previous: str  # the live version before it
    problems: tuple[str, ...] = ()  # why the bundle was refused (formatted, Vietnamese)
    notes: tuple[str, ...] = ()  # what the organiser should know although it worked

    @property
    def changed(self) -> bool:
        return self.ok and self.version != self.previous


# -- the published version ------------------------------------------------------------------------


async def read_current(db: Any) -> Published | None:
    async with db.reads() as session:
        row = await session.get(ChannelCursor, CURRENT)
    if row is None:
        return None
    try:
        data = orjson.loads(row.value)
    except orjson.JSONDecodeError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version:
        return None
    at = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
    return Published(version, at, str(data.get("by") or ""))


async def write_current(
    db: Any, version: str, *, by: str, now: datetime, previous: str | None = None,
    audit: bool = True,
) -> None:
    """Record `version` as the deployment's current one (and an audit row for a reload)."""
    value = orjson.dumps({"version": version, "by": by}).decode()
    async with db.sessions() as session, session.begin():
        row = await session.get(ChannelCursor, CURRENT)
        if row is None:
            session.add(ChannelCursor(name=CURRENT, value=value, updated_at=now))
        else:
            row.value = value
            row.updated_at = now
        if audit:
            session.add(AuditEntry(at=now, actor=by, action=AUDIT_ACTION,
                                   detail={"version": version, "previous": previous or ""}))


async def announce(redis_url: str | None, prefix: str, version: str) -> bool:
    """Tell every process on the Redis to look at the current version now."""
    if not redis_url:
        return False
    from redis.asyncio import Redis

    client: Redis = Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        await client.publish(prefix + CHANNEL, version)
        return True
    except Exception as error:  # the processes still find it by polling
        log.warning("could not announce flow version %s on Redis: %s", version[:12], error)
        return False
    finally:
        await client.aclose()


async def sync_tree(db: Any, flows: Flows) -> None:
    """The records' organisation tables follow the live tree (reports read them)."""
    from bots.reports.organisations import sync_organisations

    try:
        await sync_organisations(db, flows.compiled)
    except Exception:
        log.exception("organisation tree not synchronised; reports use the previous tree")


# -- preparing a bundle ---------------------------------------------------------------------------


def prepare(path: Path, settings: Any, env: Mapping[str, str] | None, *,
            channels: bool) -> Flows:
    """Load, check and compile `path`; with `channels`, also refuse a bundle whose channel
    configuration a (re)start would refuse. Raises `FlowsInvalid`."""
    flows = load_flows(path)
    if channels:
        from bots.channels import ChannelConfigError, read_config

        try:
            read_config(flows.channels, settings, os.environ if env is None else env)
        except ChannelConfigError as error:
            raise FlowsInvalid([f"{path}: {p}" for p in error.problems]) from None
    return flows


def newest_change(flows: Flows) -> float:
    """When a file of the bundle last changed (seconds since the epoch)."""
    times = []
    for path in flows.files:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


# -- the reloader of one process ------------------------------------------------------------------


class Reloader:
    """Reload and follow reloads for one runtime (see the module docstring). The console calls
    `reload`; `loa serve` calls `reload_soon` on SIGHUP; the runtime starts and stops it."""

    def __init__(self, runtime: Runtime, *, poll_every: float | None = None) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.poll_every = poll_every if poll_every is not None else (
            POLL_WITH_REDIS if settings.redis_url else POLL_EVERY
        )
        self.switched_at: datetime | None = None
        self.switched_by = "start"
        self.behind: str | None = None  # a published version this process cannot find
        self.last: ReloadResult | None = None  # the last reload asked of this process
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._misses: dict[str, float] = {}  # version → config mtime when it was not found
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def config(self) -> Path:
        """The deployment's flows file (what a reload reads, what an upload replaces)."""
        return Path(self.runtime.settings.config)

    @property
    def version(self) -> str:
        return self.runtime.version

    def validate(self, main: Path) -> list[str]:
        """What a reload of `main` would refuse beyond check (channel configuration whose
        `$VAR` secrets this server lacks), as problem lines; [] when it would load."""
        runtime = self.runtime
        try:
            prepare(main, runtime.settings, runtime.env, channels=runtime.serve_channels)
        except FlowsInvalid as error:
            return list(error.problems)
        return []

    def main_file(self) -> Path | None:
        """The live version's main file as archived (the exact bytes that run)."""
        version = self.runtime.version
        found = self.runtime.archive.main_file(version) if version else None
        if found is not None and found.is_file():
            return found
        flows = self.runtime.flows
        return flows.files[0] if flows is not None and flows.files else None

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile with the published version, then follow it (server processes only)."""
        if not self.runtime.recover:
            return  # `loa chat`: a private conversation, it neither publishes nor follows
        self.switched_at = datetime.now(UTC)
        started_on = self.runtime.version
        try:
            await self._reconcile()
        except Exception:
            log.exception("could not read the published flow version; following it later")
        flows = self.runtime.flows
        if flows is not None and flows.version != started_on:
            await sync_tree(self.runtime.db, flows)  # the runtime synced the file it loaded
        loop = asyncio.get_running_loop()
        if self.runtime.settings.redis_url:
            self._tasks.append(loop.create_task(self._listen()))
        if self.poll_every > 0:
            self._tasks.append(loop.create_task(self._poll()))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._background.clear()

    async def _reconcile(self) -> None:
        runtime = self.runtime
        own = runtime.flows
        if own is None:
            return
        db = runtime.db
        current = await read_current(db)
        if current is None or (
            current.version != own.version and newest_change(own) > current.at.timestamp()
        ):
            if current is not None:
                log.info("flows file changed since version %s was published: publishing %s",
                         current.version[:12], own.version[:12])
            await write_current(db, own.version, by="start", now=datetime.now(UTC),
                                previous=current.version if current else None,
                                audit=current is not None)
            await announce(runtime.settings.redis_url, runtime.settings.redis_prefix,
                           own.version)
            return
        if current.version != own.version:
            await self._follow(current)

    # -- reloading ---------------------------------------------------------------------------

    async def reload(self, *, actor: str = "system", path: Path | None = None) -> ReloadResult:
        """Check the flows file and make it live everywhere; refused (nothing changes) when it
        does not pass check."""
        runtime = self.runtime
        source = Path(path) if path is not None else self.config
        async with self._lock:
            previous = runtime.version
            try:
                flows = await asyncio.to_thread(
                    prepare, source, runtime.settings, runtime.env,
                    channels=runtime.serve_channels,
                )
            except FlowsInvalid as error:
                log.warning("reload refused (%d problems); version %s stays live",
                            len(error.problems), previous[:12])
                result = ReloadResult(False, previous, previous, error.problems)
                self.last = result
                return result
            notes: list[str] = []
            current = runtime.flows
            if current is not None and dict(current.channels) != dict(flows.channels):
                notes.append(CHANNELS_CHANGED)
            self._switch(flows, actor)
            db = runtime.db
            try:
                await write_current(db, flows.version, by=actor, now=datetime.now(UTC),
                                    previous=previous)
            except Exception as error:  # live here; the others follow once it is recorded
                log.exception("reloaded version %s not recorded", flows.version[:12])
                notes.append("Đã áp dụng ở máy chủ này nhưng chưa ghi được vào cơ sở dữ liệu "
                             f"để các máy chủ khác làm theo ({error}). Hãy tải lại lần nữa.")
            else:
                await announce(runtime.settings.redis_url, runtime.settings.redis_prefix,
                               flows.version)
            await sync_tree(db, flows)
            result = ReloadResult(True, flows.version, previous, (), tuple(notes))
            self.last = result
            log.info("flows reloaded by %s: %s → %s", actor, previous[:12], flows.version[:12])
            return result

    def reload_soon(self, actor: str = "signal") -> None:
        """Reload in the background (a signal handler cannot await); the outcome is logged."""
        async def run() -> None:
            result = await self.reload(actor=actor)
            for line in result.problems:
                log.error("%s", line)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _switch(self, flows: Flows, by: str) -> None:
        self.runtime.switch_flows(flows)
        self.switched_at = datetime.now(UTC)
        self.switched_by = by
        self.behind = None

    # -- following ---------------------------------------------------------------------------

    async def check_now(self) -> bool:
        """Look at the published version and follow it; True if this process switched."""
        current = await read_current(self.runtime.db)
        if current is None or current.version == self.runtime.version:
            if current is not None:
                self.behind = None
            return False
        async with self._lock:
            if current.version == self.runtime.version:
                return False
            return await self._follow(current)

    async def _follow(self, current: Published) -> bool:
        flows = await asyncio.to_thread(self._find, current.version)
        if flows is None:
            if self.behind != current.version:
                log.error(
                    "flow version %s (published by %s) is neither in %s nor the content of "
                    "%s; version %s stays live here",
                    current.version[:12], current.by or "?", self.runtime.archive.root,
                    self.config, self.runtime.version[:12],
                )
            self.behind = current.version
            return False
        self._switch(flows, current.by or "published")
        log.info("following the published flow version %s", flows.version[:12])
        return True

    def _find(self, version: str) -> Flows | None:
        """The published version from the archive, or from our own flows file if it has that
        content now. Runs in a thread (files and compiling)."""
        main = self.runtime.archive.main_file(version)
        if main is not None and main.is_file():
            try:
                flows = load_flows(main)
            except FlowsInvalid as error:
                log.warning("archived version %s does not load: %s", version[:12], error)
            else:
                if flows.version == version:
                    return flows
        try:
            stamp = self.config.stat().st_mtime
        except OSError:
            return None
        if self._misses.get(version) == stamp:
            return None  # the file has not changed since it did not match
        try:
            mine = load_flows(self.config)
        except FlowsInvalid:
            mine = None
        if mine is not None and mine.version == version:
            self._misses.pop(version, None)
            return mine
        self._misses[version] = stamp
        return None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_every)
            try:
                await self.check_now()
            except Exception:
                log.exception("could not look at the published flow version")

    async def _listen(self) -> None:
        from redis.asyncio import Redis

        settings = self.runtime.settings
        channel = settings.redis_prefix + CHANNEL
        client: Redis = Redis.from_url(settings.redis_url or "")
        try:
            while True:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(channel)
                    await self.check_now()  # anything published while not subscribed
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self.check_now()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning("flow reload channel on Redis: %s; resubscribing", error)
                    await asyncio.sleep(2.0)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()


__all__ = [
    "AUDIT_ACTION",
    "CHANNEL",
    "CURRENT",
    "POLL_EVERY",
    "POLL_WITH_REDIS",
    "Published",
    "ReloadResult",
    "Reloader",
    "announce",
    "newest_change",
    "prepare",
    "read_current",
    "sync_tree",
    "write_current",
]
