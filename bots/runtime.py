"""Wiring: flows → engine, records, store, pipeline, adapters; started and stopped as one.

`Runtime(settings).start()` loads flows.yaml (refusing a bundle that does not pass check),
archives its sources, upgrades the records schema (Alembic), opens the conversation store,
builds the pipeline and drains what a previous run left (crash recovery). `loa serve` runs it
inside the aiohttp app (bots.server); `loa chat` runs it on its own (bots.console_chat).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters.base import Adapter
from adapters.webchat import WebchatAdapter
from bots.bundles import BundleArchive, MediaLibrary, media_references
from bots.images import CheckedImage, check_image
from bots.media import MediaCapture
from bots.pipeline import Pipeline, PullChannel
from bots.records import Database, FileStore, Records, open_database
from bots.settings import Settings
from bots.state import Store, open_store
from flows import session as session_codec
from flows.compiler import CompiledBundle
from flows.engine import Engine
from flows.events import RecordEvent
from flows.schema import Bundle
from flows.session import Session
from flows.vocab import Channel, ConversationKey

log = logging.getLogger("loa.runtime")

SWEEP_EVERY = 15.0  # seconds between looks for work a dead worker left behind


class FlowsInvalid(Exception):
    """flows.yaml does not pass check; `problems` are `file:line:column: message` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Flows:
    """One checked and compiled flow version."""

    compiled: CompiledBundle
    version: str  # content hash
    base_dir: Path
    files: tuple[Path, ...]
    media: tuple[str, ...]  # image/file paths it references, relative to base_dir
    districts: tuple[tuple[str, str], ...]  # (slug, name) in file order
    webchat: tuple[tuple[str, str], ...]  # the districts the browser chat offers


def load_flows(path: Path) -> Flows:
    """Load, check and compile; raises `FlowsInvalid` unless everything passes check."""
    from flows.check import format_problem, load_checked
    from flows.compiler import compile_bundle

    if not path.is_file():
        raise FlowsInvalid(
            [f"{path}:1:1: không tìm thấy tệp kịch bản (đặt LOA_CONFIG hoặc --config)"]
        )
    loaded = load_checked(path)
    if loaded.bundle is None or loaded.errors:
        lines = [format_problem(p) for p in loaded.errors]
        raise FlowsInvalid(lines or [f"{loaded.main_file}:1:1: kịch bản không hợp lệ"])
    compiled = compile_bundle(loaded.bundle, loaded.base_dir)
    return Flows(
        compiled=compiled,
        version=loaded.content_hash,
        base_dir=loaded.base_dir,
        files=tuple(loaded.files),
        media=tuple(media_references(loaded.bundle)),
        districts=tuple(_districts(compiled)),
        webchat=tuple(_webchat_districts(compiled, loaded.bundle)),
    )


def _districts(compiled: CompiledBundle) -> list[tuple[str, str]]:
    return [(slug, district.name) for slug, district in compiled.districts.items()]


def _webchat_districts(compiled: CompiledBundle, bundle: Bundle) -> list[tuple[str, str]]:
    """Districts the browser chat serves: those listing a `webchat` channel, in file order;
    every district when none does (a deployment that never thought about the browser)."""
    listed: set[str] = set()
    stack = list(bundle.organisations.items())
    while stack:
        slug, node = stack.pop()
        if "webchat" in node.channels:
            listed.add(slug)
        stack.extend(node.children.items())
    everyone = _districts(compiled)
    chosen = [(slug, name) for slug, name in everyone if slug in listed]
    return chosen or everyone


def compile_archived(main_file: Path) -> Any:
    """An archived version compiled again (None if it no longer passes check)."""
    try:
        return load_flows(main_file).compiled
    except FlowsInvalid as error:
        log.warning("archived flows %s no longer pass check: %s", main_file, error)
        return None


class SqlRecords:
    """`bots.pipeline.Records` over the records database (`bots.records.Records`)."""

    def __init__(self, records: Records, flows: Callable[[], CompiledBundle]) -> None:
        self.records = records
        self.flows = flows  # the current compiled bundle (it may be reloaded)

    async def apply(
        self, key: ConversationKey, inbound_id: str, events: Sequence[RecordEvent], now: datetime
    ) -> None:
        await self.records.apply(key, inbound_id, events, now)

    async def touch(self, key: ConversationKey, at: datetime, ref: str | None) -> None:
        await self.records.touch_identity(key, at, ref=ref)

    async def restore(self, key: ConversationKey, now: datetime) -> Session | None:
        profile = await self.records.load_profile(key)
        if not profile:
            return None
        return session_from_profile(profile, self.flows())


def session_from_profile(profile: Mapping[str, str], bundle: CompiledBundle) -> Session:
    """A fresh session for a person whose stored session expired, rebuilt from the records so
    they are still known as registered: the profile as saved; consent given (personal data is
    only ever saved after it); and every required flow (registration) whose profile fields are
    all there counted as finished."""
    done = [
        fid
        for fid in sorted(bundle.required)
        if (flow := bundle.flows.get(fid)) is not None
        and flow.profile_fields
        and all(name in profile for name in flow.profile_fields)
    ]
    return Session(profile=dict(profile), done=done, consent=True)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        adapters: Mapping[Channel, Adapter | PullChannel] | None = None,
        memory_store: bool = False,
        sweep_every: float = SWEEP_EVERY,
        recover: bool = True,
    ) -> None:
        self.settings = settings
        self.extra_adapters = dict(adapters or {})
        self.memory_store = memory_store
        self.sweep_every = sweep_every
        self.recover = recover  # `loa chat` leaves other channels' conversations to the server
        self.webchat = WebchatAdapter()
        self.media = MediaLibrary(settings.data_dir / "media")
        self.archive = BundleArchive(settings.bundles_dir, compile_archived)
        self.flows: Flows | None = None
        self._store: Store | None = None
        self._pipeline: Pipeline | None = None
        self._engine: Any = None
        self._files: FileStore | None = None
        self._db: Database | None = None
        self._records: SqlRecords | None = None
        self._capture: MediaCapture | None = None
        self._executor: Executor | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._pending: tuple[float, int] = (0.0, 0)

    # -- what handlers use -----------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("runtime not started")
        return self._store

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("runtime not started")
        return self._pipeline

    @property
    def version(self) -> str:
        return self.flows.version if self.flows is not None else ""

    @property
    def districts(self) -> tuple[tuple[str, str], ...]:
        """The districts the browser chat offers (the first is its default)."""
        return self.flows.webchat if self.flows is not None else ()

    @property
    def store_kind(self) -> str:
        if self.memory_store:
            return "memory"
        return "redis" if self.settings.redis_url else "sqlite"

    async def pending_count(self) -> int:
        """Conversations with inbox items waiting (cached a few seconds: SCAN on Redis)."""
        at, count = self._pending
        if time.monotonic() - at > 5.0:
            count = len(await self.store.pending_keys())
            self._pending = (time.monotonic(), count)
        return count

    async def store_image(self, data: bytes) -> tuple[str, CheckedImage]:
        """Check an uploaded image off the event loop, then store it content-addressed.
        Raises `ImageRejected` (nothing stored) when it is not an acceptable image."""
        loop = asyncio.get_running_loop()
        checked = await loop.run_in_executor(self._image_executor(), check_image, data)
        sha256 = await self._put_file(data)
        return sha256, checked

    def _image_executor(self) -> Executor:
        if self._executor is None:
            # Threads, not processes: Pillow releases the GIL while it decodes (two checks run
            # in parallel, measured), and a process pool would re-import the caller's main
            # module and fork a process that holds database threads.
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="loa-image")
        return self._executor

    async def _put_file(self, data: bytes) -> str:
        if self._files is None:
            raise RuntimeError("runtime not started")
        return await self._files.put_async(data)

    # -- lifecycle -------------------------------------------------------------------------------

    def load(self) -> Flows:
        """Load and check flows.yaml (raises `FlowsInvalid`); archive it; index its media."""
        flows = load_flows(self.settings.config)
        versions = {fid: flow.version for fid, flow in flows.compiled.flows.items()}
        self.archive.keep(flows.version, flows.files, flows.base_dir, flows.media, versions)
        self.archive.remember(flows.version, flows.compiled)
        self.media.add_bundle(flows.base_dir, list(flows.media))
        self.flows = flows
        self.webchat.districts = tuple(slug for slug, _ in flows.webchat)
        return flows

    async def start(self) -> None:
        flows = self.flows or self.load()
        self._engine = Engine(flows.compiled, self.archive)
        await self._open_records()
        self._store = await open_store(
            redis_url=self.settings.redis_url,
            data_dir=self.settings.data_dir,
            memory=self.memory_store,
            lock_ttl=self.settings.lock_ttl,
            session_ttl=self.settings.session_ttl,
            prefix=self.settings.redis_prefix,
        )
        adapters: dict[Channel, Adapter | PullChannel] = {Channel.WEBCHAT: self.webchat}
        adapters.update(self.extra_adapters)
        self._pipeline = Pipeline(
            self._store,
            self._engine,
            session_codec,
            records=self._records,
            adapters=adapters,
            media_url=self.media.url,
            capture=self._capture.capture if self._capture is not None else None,
        )
        if self.recover:
            recovered = await self._pipeline.recover()
            if recovered:
                log.info("resuming %d conversations left from the last run", recovered)
        if self.sweep_every > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _open_records(self) -> None:
        self._files = FileStore(self.settings.files_dir)
        # Creates or migrates the schema (Alembic) before anything is served.
        self._db = await open_database(self.settings.database_url)
        records = Records(self._db.sessions, self._files, reads=self._db.reads)
        self._records = SqlRecords(records, lambda: self._current().compiled)
        # Evidence media: downloaded from the platform (or read back, for uploads already
        # stored), inspected in a process pool started on the first image (sha256, perceptual
        # hash, QR text), kept content-addressed. Telegram tokens come with the channels.
        self._capture = MediaCapture.from_settings(self.settings, files=self._files)

    def _current(self) -> Flows:
        if self.flows is None:
            raise RuntimeError("flows not loaded")
        return self.flows

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            try:
                await self.pipeline.recover()
            except Exception:
                log.exception("periodic recovery failed; trying again in %.0f s", self.sweep_every)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self._pipeline is not None:
            try:
                await asyncio.wait_for(self._pipeline.idle(), timeout=10)
            except TimeoutError:
                log.warning("stopping with conversations still running; they resume on start")
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._capture is not None:
            await self._capture.close()
            self._capture = None
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
