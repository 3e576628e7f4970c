"""What a running Loa process adds for its operators, started and stopped with the runtime.

    ops = Operations(settings)
    ops.hold()                                    # the data directory's shared lock (restore)
    await ops.start(inbox=…, outbox=…, running=…, notify=…)
    pipeline = Pipeline(…, metrics=ops.metrics, capture=ops.disk.guarded(capture))
    ops.disk.check_upload()                       # before storing a browser upload
    app.router.add_get("/metrics", ops.metrics.handler)
    await ops.stop()
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bots.ops.datadir import DataDirLock, hold_shared
from bots.ops.diskguard import (
    DISK_LEVELS_VALUE,
    DiskFull,
    DiskGuard,
    DiskLevel,
    DiskStatus,
    DiskThresholds,
)
from bots.ops.metrics import Metrics
from flows.vocab import Channel

log = logging.getLogger("loa.ops")

DISK_EVERY = 60.0  # seconds between disk checks
CHECKPOINT_EVERY = 600.0  # seconds between emptyings of the SQLite records' write-ahead log
Source = Callable[[], Awaitable[int] | int]
Notify = Callable[[str], Awaitable[None]]


class Operations:
    def __init__(
        self,
        settings: Any,
        *,
        usage: Callable[[Any], Any] = shutil.disk_usage,
        disk_every: float = DISK_EVERY,
        lag_every: float = 0.5,
        checkpoint_every: float = CHECKPOINT_EVERY,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.disk = DiskGuard(
            settings.data_dir,
            DiskThresholds.from_settings(settings),
            usage=usage,
            on_change=self._disk_changed,
            on_refuse=lambda: self.metrics.refused("disk_full"),
        )
        self.disk_every = disk_every
        self.lag_every = lag_every
        self.checkpoint_every = checkpoint_every
        self.notify: Notify | None = None
        self._lock: DataDirLock | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def hold(self) -> None:
        """Take the data directory's shared lock (idempotent): `loa restore` refuses to run
        under a live process."""
        if self._lock is None:
            self._lock = hold_shared(self.settings.data_dir)

    async def start(
        self,
        *,
        inbox: Source | None = None,
        outbox: Source | None = None,
        running: Source | None = None,
        notify: Notify | None = None,
    ) -> None:
        self.hold()
        self.notify = notify
        sources = self.metrics.sources
        for name, source in (("inbox", inbox), ("outbox", outbox), ("running", running)):
            if source is not None:
                sources[name] = source
        sources["disk_free"] = lambda: self.disk.status().free
        sources["disk_level"] = lambda: DISK_LEVELS_VALUE[self.disk.status().level]
        loop = asyncio.get_running_loop()
        if self.lag_every > 0:
            self._tasks.append(loop.create_task(self.metrics.watch_loop(self.lag_every)))
        if self.disk_every > 0:
            self._tasks.append(loop.create_task(self.disk.watch(self.disk_every)))

    async def attach(self, runtime: Any) -> None:
        """`start` for a started `bots.runtime.Runtime`: its inbox and outbox depths, running
        workers, and organiser notifications in its records database."""
        store = runtime.store
        outbox_keys = getattr(store, "outbox_keys", None)

        async def outbox() -> int:
            if outbox_keys is None:
                return 0
            # The browser's transcript stays in its outbox until the page confirms it: only
            # push channels' replies are "waiting for delivery".
            return sum(1 for key in await outbox_keys() if key.channel is not Channel.WEBCHAT)

        database = getattr(runtime, "_db", None)  # the runtime's records database
        notify: Notify | None = None
        if database is not None:

            async def notify(text: str) -> None:
                await notify_organisers(database.sessions, _roots(runtime), text)

        await self.start(
            inbox=runtime.pending_count,
            outbox=outbox,
            running=lambda: runtime.pipeline.busy,
            notify=notify,
        )
        records = getattr(getattr(database, "engine", None), "url", None)
        if (
            self.checkpoint_every > 0
            and records is not None
            and records.get_backend_name() == "sqlite"
            and records.database
        ):
            task = asyncio.get_running_loop().create_task(
                self._checkpoints(Path(records.database))
            )
            self._tasks.append(task)

    async def _checkpoints(self, path: Path) -> None:
        """Empty the records' write-ahead log now and then: what "xóa dữ liệu của tôi" deleted
        (zeroed in the pages: secure_delete) then also leaves the -wal file and the older page
        copies in the database file."""
        from bots.ops.purge import sqlite_checkpoint

        while True:
            await asyncio.sleep(self.checkpoint_every)
            try:
                done = await asyncio.to_thread(sqlite_checkpoint, path, 1000)
                if not done:
                    log.info("records checkpoint postponed: readers were busy")
            except Exception:
                log.exception("records checkpoint failed; trying again later")

    def check_image_upload(self) -> None:
        """Before a browser upload is stored: `ImageRejected` with the Vietnamese message
        while the disk is (nearly) full."""
        from bots.images import ImageRejected

        try:
            self.disk.check_upload(image=True)
        except DiskFull as full:
            raise ImageRejected(full.text) from None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _disk_changed(self, status: DiskStatus, previous: DiskStatus | None) -> None:
        if self.notify is None:
            return
        if status.level is DiskLevel.OK and previous is None:
            return
        try:
            await self.notify(status.describe())
        except Exception:
            log.exception("could not notify organisers about the disk")


def _roots(runtime: Any) -> list[str]:
    """The top nodes of the organisation tree (their organisers see the whole deployment);
    the districts when the tree is not known."""
    flows = getattr(runtime, "flows", None)
    compiled = getattr(flows, "compiled", None)
    roots = list(getattr(compiled, "organisations", {}) or {})
    if not roots and compiled is not None:
        roots = list(compiled.districts)
    return roots


async def notify_organisers(
    sessions: Any, districts: Sequence[str], text: str, *, now: datetime | None = None
) -> int:
    """A notification for the organisers of each of `districts` (the roots of the
    organisation tree); returns how many were written."""
    from bots.records.models import NotificationKind, OrganiserNotification

    now = now or datetime.now(UTC)
    async with sessions() as session, session.begin():
        for district in districts:
            session.add(
                OrganiserNotification(
                    district=district,
                    participant_id=None,
                    kind=NotificationKind.NOTIFY,
                    text=text,
                    created_at=now,
                )
            )
    return len(districts)


__all__ = ["DISK_EVERY", "Operations", "notify_organisers"]
