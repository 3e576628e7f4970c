"""The pipeline's media step: download what a person sent, check it, keep it content-addressed.

    inbound (IMAGE/FILE with platform URLs or file ids)
      → download each attachment (fetch.py: the channel's own hosts only, capped, timed)
      → inspect it in the process pool (inspect.py: decodes, sha256, phash, QR text)
      → store the bytes (records/files.py) once every attachment of the message passed
      → the same inbound whose attachments carry sha256, the sniffed mime, size, qr and phash.

Anything refused raises a `MediaError` (errors.py) whose `text` is the Vietnamese message for the
person and whose `reason` says why; nothing of that message is stored. Stickers, likes and GIFs
(InboundKind.STICKER) and every other kind pass through untouched: they are never evidence.
Attachments already stored by Loa (browser uploads, `loa chat`) are read back and inspected the
same way, so every evidence item gets its hashes and QR text whatever the channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bots.media.errors import DownloadFailed, MediaError, TooLarge
from bots.media.fetch import Fetcher, FetchLimits, Origins, channel_origins
from bots.media.inspect import MAX_PIXELS, InspectPool, Limits, MediaFacts
from bots.records.files import FileStore
from flows.vocab import Attachment, Channel, Inbound, InboundKind, key_of

log = logging.getLogger("loa.media")

DEFAULT_TELEGRAM_API = "https://api.telegram.org"

TokenOf = Callable[[str], str | None]
"""district slug → that district's Telegram bot token (None: Telegram is not set up there)."""


@dataclass(frozen=True, slots=True)
class MediaConfig:
    origins: Mapping[Channel, Origins] = field(default_factory=dict)
    telegram_api: str = DEFAULT_TELEGRAM_API
    fetch: FetchLimits = field(default_factory=FetchLimits)
    max_pixels: int = MAX_PIXELS
    budget: float = 18.0  # seconds for one attachment's download, retries included
    retries: int = 1  # more tries after a transient failure (timeout, connection, 5xx)
    retry_pause: float = 0.5
    workers: int | None = None  # inspection processes (None: CPU count, at most 4)

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        *,
        extra_origins: Mapping[Channel, Sequence[str]] | None = None,
        **changes: Any,
    ) -> MediaConfig:
        """From `bots.settings.Settings`: the API bases become allowed origins; the download
        budget stays well inside the conversation lock's lease (the worker holds the lock while
        it captures). `media_workers` / `media_max_bytes` are read if the settings have them."""
        lock_ttl = float(getattr(settings, "lock_ttl", 30.0))
        limits = FetchLimits()
        max_bytes = getattr(settings, "media_max_bytes", None)
        if max_bytes:
            limits = replace(limits, max_bytes=int(max_bytes))
        values: dict[str, Any] = {
            "origins": channel_origins(settings, extra_origins),
            "telegram_api": settings.telegram_api,
            "fetch": limits,
            "budget": min(18.0, lock_ttl * 0.6),
            "workers": getattr(settings, "media_workers", None),
        }
        values.update(changes)
        return cls(**values)

    @property
    def limits(self) -> Limits:
        return Limits(max_bytes=self.fetch.max_bytes, max_pixels=self.max_pixels)


@dataclass(frozen=True, slots=True)
class Captured:
    """An inbound after capture, and what inspecting each of its attachments found (in order;
    empty when the inbound carries no media to capture)."""

    inbound: Inbound
    facts: tuple[MediaFacts, ...] = ()


class MediaCapture:
    """Everything capture needs: allowed origins and limits, an HTTP client, the inspection pool
    and the file store. One per process; `close()` on shutdown."""

    def __init__(
        self,
        files: FileStore,
        config: MediaConfig | None = None,
        *,
        telegram_token: TokenOf | None = None,
        fetcher: Fetcher | None = None,
        pool: InspectPool | None = None,
    ) -> None:
        self.files = files
        self.config = config or MediaConfig()
        self.telegram_token = telegram_token
        self.fetcher = fetcher or Fetcher(self.config.fetch)
        self.pool = pool or InspectPool(self.config.workers)
        self._own_pool = pool is None

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        *,
        files: FileStore | None = None,
        telegram_token: TokenOf | None = None,
        extra_origins: Mapping[Channel, Sequence[str]] | None = None,
        pool: InspectPool | None = None,
    ) -> MediaCapture:
        return cls(
            files or FileStore(settings.files_dir),
            MediaConfig.from_settings(settings, extra_origins=extra_origins),
            telegram_token=telegram_token,
            pool=pool,
        )

    async def close(self) -> None:
        await self.fetcher.close()
        if self._own_pool:
            await self.pool.aclose()

    # -- the step --------------------------------------------------------------------------------

    async def capture(self, inbound: Inbound) -> Inbound:
        """`inbound` with its media downloaded, checked and stored; unchanged for other kinds.
        Raises `MediaError` (show `error.text` to the person; nothing was stored)."""
        return (await self.capture_facts(inbound)).inbound

    async def capture_facts(self, inbound: Inbound) -> Captured:
        if inbound.kind not in (InboundKind.IMAGE, InboundKind.FILE) or not inbound.attachments:
            return Captured(inbound)
        want_image = inbound.kind is InboundKind.IMAGE
        checked: list[tuple[Attachment, MediaFacts, bytes | None]] = []
        for attachment in inbound.attachments:
            try:
                checked.append(await self._check(inbound, attachment, want_image))
            except MediaError as error:
                error.image = want_image
                error.limit = self.config.fetch.max_bytes
                log.info(
                    "%s message %s: media refused (%s): %s",
                    key_of(inbound),
                    inbound.message_id,
                    error.reason.value,
                    error,
                )
                raise
        # Stored only once the whole message passed: a refused message leaves no file behind.
        done: list[Attachment] = []
        for attachment, facts, data in checked:
            if data is not None:
                sha = await self.files.put_async(data)
                if sha != facts.sha256:  # cannot happen unless memory is corrupt: never store a lie
                    raise DownloadFailed("stored hash differs from the inspected one")
            done.append(_with_facts(attachment, facts))
        return Captured(replace(inbound, attachments=tuple(done)), tuple(f for _, f, _ in checked))

    async def _check(
        self, inbound: Inbound, attachment: Attachment, want_image: bool
    ) -> tuple[Attachment, MediaFacts, bytes | None]:
        """Inspect one attachment; the bytes are returned when they still need storing."""
        data: bytes
        fresh: bytes | None
        if attachment.sha256:
            # Already in Loa's store (a browser upload): read it back to inspect it the same way.
            try:
                data = await asyncio.to_thread(self.files.read, attachment.sha256)
            except (FileNotFoundError, ValueError):
                raise DownloadFailed(f"stored file {attachment.sha256[:12]}… is missing") from None
            fresh = None
        else:
            cap = self.config.fetch.max_bytes
            if attachment.size is not None and attachment.size > cap:
                raise TooLarge(f"{attachment.size} bytes declared by the platform, cap {cap}")
            data = await self._download(inbound, attachment)
            fresh = data
        facts = await self.pool.inspect(
            data, want_image=want_image, limits=self.config.limits, name=attachment.name
        )
        if attachment.sha256 and facts.sha256 != attachment.sha256:
            raise DownloadFailed(f"stored file {attachment.sha256[:12]}… does not match its hash")
        return attachment, facts, fresh

    async def _download(self, inbound: Inbound, attachment: Attachment) -> bytes:
        origins = self.config.origins.get(inbound.channel, Origins())
        config = self.config
        try:
            async with asyncio.timeout(config.budget):
                for attempt in range(config.retries + 1):
                    try:
                        return await self._fetch_once(inbound, attachment, origins)
                    except DownloadFailed as error:
                        if not error.transient or attempt == config.retries:
                            raise
                        log.info("%s: download failed (%s); trying again", key_of(inbound), error)
                        await asyncio.sleep(config.retry_pause)
        except TimeoutError:
            raise DownloadFailed(
                f"no download within {config.budget:.0f} s", transient=True
            ) from None
        raise DownloadFailed("no download attempt made")  # retries < 0

    async def _fetch_once(
        self, inbound: Inbound, attachment: Attachment, origins: Origins
    ) -> bytes:
        if inbound.channel is Channel.TELEGRAM and attachment.file_id:
            token = self.telegram_token(inbound.district) if self.telegram_token else None
            if not token:
                raise DownloadFailed(f"no Telegram bot token for district {inbound.district!r}")
            return await self.fetcher.telegram_file(
                self.config.telegram_api, token, attachment.file_id, origins
            )
        if attachment.url:
            return await self.fetcher.fetch(attachment.url, origins)
        raise DownloadFailed("the attachment has neither a URL nor a file id")

    # -- bytes already in hand -------------------------------------------------------------------

    async def inspect_bytes(
        self, data: bytes, *, want_image: bool = True, name: str | None = None
    ) -> MediaFacts:
        """Inspect bytes in hand (a browser upload) as downloaded media is inspected."""
        try:
            return await self.pool.inspect(
                data, want_image=want_image, limits=self.config.limits, name=name
            )
        except MediaError as error:
            error.image = want_image
            error.limit = self.config.fetch.max_bytes
            raise

    async def store_bytes(
        self, data: bytes, *, want_image: bool = True, name: str | None = None
    ) -> MediaFacts:
        """Inspect, then store content-addressed (`facts.sha256` is the stored file's name)."""
        facts = await self.inspect_bytes(data, want_image=want_image, name=name)
        await self.files.put_async(data)
        return facts


def _with_facts(attachment: Attachment, facts: MediaFacts) -> Attachment:
    return replace(
        attachment,
        sha256=facts.sha256,
        mime=facts.mime,
        size=facts.size,
        qr=facts.qr_text,
        phash=facts.phash,
    )


async def capture(inbound: Inbound, media: MediaCapture) -> Inbound:
    """The pipeline's call: see `MediaCapture.capture`."""
    return await media.capture(inbound)


__all__ = [
    "Captured",
    "MediaCapture",
    "MediaConfig",
    "TokenOf",
    "capture",
]
