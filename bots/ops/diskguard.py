"""The disk-space guard: warn organisers early, refuse new evidence before the disk is full.

    guard = DiskGuard(settings.data_dir, DiskThresholds.from_settings(settings))
    guard.check_upload(image=True)       # raises DiskFull (`error.text` for the person)
    capture = guard.guarded(capture)     # the pipeline's media step, refused when full
    await guard.watch(every=60.0)        # re-checks; `on_change` hears of each new level

Levels (free space of the file system holding the data directory, `shutil.disk_usage`):

- `OK`;
- `LOW` below the warning threshold: organisers are notified and it is logged; nothing refused;
- `FULL` below the minimum: new uploads and evidence downloads are refused with a Vietnamese
  message ("Hệ thống đang tạm đầy bộ nhớ, …"); everything already stored stays as it is, and
  texts, registrations and every other message keep working (they need a few bytes of
  database, not megabytes of images).

Thresholds: `LOA_DISK_WARN_MB` and `LOA_DISK_MIN_MB`. Unset, they are 2 GB and 500 MB, or 5 %
and 2 % of the disk when that is less (so a small disk is not always "low").
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from flows.vocab import Inbound, InboundKind

log = logging.getLogger("loa.ops.disk")

MB = 2**20
DEFAULT_WARN_MB = 2048
DEFAULT_MIN_MB = 500
DEFAULT_WARN_PERCENT = 5.0
DEFAULT_MIN_PERCENT = 2.0

FULL_IMAGE = "Hệ thống đang tạm đầy bộ nhớ, bạn gửi lại ảnh sau ít phút nhé."
FULL_FILE = "Hệ thống đang tạm đầy bộ nhớ, bạn gửi lại tệp sau ít phút nhé."


class Usage(NamedTuple):
    total: int
    used: int
    free: int


UsageFn = Callable[[Path], Any]  # shutil.disk_usage, or a fake in tests


class DiskLevel(enum.Enum):
    OK = "ok"
    LOW = "low"
    FULL = "full"


DISK_LEVELS_VALUE = {DiskLevel.OK: 0, DiskLevel.LOW: 1, DiskLevel.FULL: 2}  # the metric's value


@dataclass(frozen=True, slots=True)
class DiskThresholds:
    """Explicit byte thresholds (None: the default, see the module docstring)."""

    warn_bytes: int | None = None
    min_bytes: int | None = None
    warn_percent: float = DEFAULT_WARN_PERCENT
    min_percent: float = DEFAULT_MIN_PERCENT

    @classmethod
    def from_settings(cls, settings: Any) -> DiskThresholds:
        warn = getattr(settings, "disk_warn_mb", None)
        minimum = getattr(settings, "disk_min_mb", None)
        return cls(
            warn_bytes=None if warn is None else int(warn) * MB,
            min_bytes=None if minimum is None else int(minimum) * MB,
        )

    def limits(self, total: int) -> tuple[int, int]:
        """(warning, minimum) in bytes for a disk of `total` bytes."""
        warn = self.warn_bytes
        if warn is None:
            warn = min(DEFAULT_WARN_MB * MB, int(total * self.warn_percent / 100))
        minimum = self.min_bytes
        if minimum is None:
            minimum = min(DEFAULT_MIN_MB * MB, int(total * self.min_percent / 100))
        return warn, minimum

    def level(self, free: int, total: int) -> DiskLevel:
        warn, minimum = self.limits(total)
        if free < minimum:
            return DiskLevel.FULL
        if free < warn:
            return DiskLevel.LOW
        return DiskLevel.OK


@dataclass(frozen=True, slots=True)
class DiskStatus:
    level: DiskLevel
    free: int
    total: int
    warn: int  # the thresholds in force, bytes
    minimum: int

    def describe(self) -> str:
        """For organisers and the log (Vietnamese)."""
        free_mb = self.free / MB
        if self.level is DiskLevel.FULL:
            return (
                f"Ổ đĩa của Loa gần đầy: còn {free_mb:.0f} MB (dưới mức tối thiểu "
                f"{self.minimum / MB:.0f} MB). Loa đang tạm từ chối ảnh và tệp mới; tin nhắn "
                "chữ vẫn hoạt động. Cần giải phóng hoặc mở rộng ổ đĩa ngay."
            )
        if self.level is DiskLevel.LOW:
            return (
                f"Ổ đĩa của Loa sắp đầy: còn {free_mb:.0f} MB (dưới mức cảnh báo "
                f"{self.warn / MB:.0f} MB). Khi còn dưới {self.minimum / MB:.0f} MB, Loa sẽ tạm "
                "từ chối ảnh mới."
            )
        return f"Ổ đĩa của Loa đã đủ chỗ trở lại: còn {free_mb:.0f} MB."


class DiskFull(Exception):
    """New media refused because the disk is (nearly) full. `text` is for the person;
    the pipeline answers a media refusal with it (any exception with a `text`)."""

    def __init__(self, status: DiskStatus, *, image: bool = True) -> None:
        super().__init__(f"disk nearly full: {status.free} bytes free, minimum {status.minimum}")
        self.status = status
        self.image = image

    @property
    def text(self) -> str:
        return FULL_IMAGE if self.image else FULL_FILE


OnChange = Callable[[DiskStatus, DiskStatus | None], Awaitable[None] | None]
Capture = Callable[[Inbound], Awaitable[Inbound]]


class DiskGuard:
    def __init__(
        self,
        path: Path,
        thresholds: DiskThresholds | None = None,
        *,
        usage: UsageFn = shutil.disk_usage,
        max_age: float = 2.0,
        on_change: OnChange | None = None,
        on_refuse: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.thresholds = thresholds or DiskThresholds()
        self.usage = usage
        self.max_age = max_age  # seconds a reading is reused (uploads come in bursts)
        self.on_change = on_change
        self.on_refuse = on_refuse
        self.clock = clock
        self._last: DiskStatus | None = None
        self._read_at = float("-inf")
        self._announced: DiskStatus | None = None

    def status(self, *, fresh: bool = False) -> DiskStatus:
        """The current level (a statvfs call, reused for `max_age` seconds)."""
        now = self.clock()
        if fresh or self._last is None or now - self._read_at > self.max_age:
            reading = self.usage(self.path)
            total, free = int(reading.total), int(reading.free)
            warn, minimum = self.thresholds.limits(total)
            level = self.thresholds.level(free, total)
            self._last = DiskStatus(level, free, total, warn, minimum)
            self._read_at = now
        return self._last

    def check_upload(self, *, image: bool = True) -> None:
        """Raise `DiskFull` when new media must be refused; nothing is touched either way."""
        try:
            status = self.status()
        except OSError as error:  # the data directory vanished: let the store report it
            log.warning("disk usage of %s unreadable: %s", self.path, error)
            return
        if status.level is DiskLevel.FULL:
            log.warning("media refused: %s bytes free on %s", status.free, self.path)
            if self.on_refuse is not None:
                self.on_refuse()
            raise DiskFull(status, image=image)

    def guarded(self, capture: Capture) -> Capture:
        """The pipeline's media step, refusing new media while the disk is full."""

        async def guarded_capture(inbound: Inbound) -> Inbound:
            # Only what must still be downloaded: a browser upload was checked (and stored)
            # when it arrived.
            fetch = any(a.sha256 is None for a in inbound.attachments)
            if fetch and inbound.kind in (InboundKind.IMAGE, InboundKind.FILE):
                self.check_upload(image=inbound.kind is InboundKind.IMAGE)
            return await capture(inbound)

        return guarded_capture

    async def poll(self) -> DiskStatus:
        """Read afresh; tell `on_change` when the level differs from the last one announced."""
        status = self.status(fresh=True)
        previous = self._announced
        if previous is None or previous.level is not status.level:
            self._announced = status
            if status.level is not DiskLevel.OK or previous is not None:
                if status.level is DiskLevel.OK:
                    log.info("%s", status.describe())
                else:
                    log.warning("%s", status.describe())
                if self.on_change is not None:
                    result = self.on_change(status, previous)
                    if inspect.isawaitable(result):
                        await result
        return status

    async def watch(self, every: float = 60.0) -> None:
        """Poll forever (a background task of the server)."""
        while True:
            try:
                await self.poll()
            except Exception:
                log.exception("disk check failed; trying again in %.0f s", every)
            await asyncio.sleep(every)


__all__ = [
    "DISK_LEVELS_VALUE",
    "FULL_FILE",
    "FULL_IMAGE",
    "DiskFull",
    "DiskGuard",
    "DiskLevel",
    "DiskStatus",
    "DiskThresholds",
    "Usage",
]
