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
from typing import Any

from bots.ops.datadir import DataDirLock, hold_shared
from bots.ops.diskguard import DISK_LEVELS_VALUE, DiskGuard, DiskLevel, DiskStatus, DiskThresholds
from bots.ops.metrics import Metrics

log = logging.getLogger("loa.ops")

DISK_EVERY = 60.0  # seconds between disk checks
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
