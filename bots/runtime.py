"""Wiring: flows → engine, records, store, pipeline, adapters; started and stopped as one.

`Runtime(settings).start()` loads flows.yaml (refusing a bundle that does not pass check),
archives its sources, upgrades the records schema (Alembic), opens the conversation store,
builds the pipeline and drains what a previous run left (crash recovery). `loa serve` runs it
inside the aiohttp app (bots.server); `loa chat` runs it on its own (bots.console_chat).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters.base import Adapter, AdapterError
from adapters.webchat import WebchatAdapter
from bots import delivery
from bots.bundles import MEDIA_PREFIX, BundleArchive, MediaLibrary, media_references
from bots.certificates.issue import CertificateService, certificate_files, media_path
from bots.certificates.mail import MailConfigError, SmtpSettings
from bots.channels import ChannelConfigError, Channels, ChannelsConfig, read_config
from bots.images import CheckedImage, check_image
from bots.media import MediaCapture
from bots.ops.service import Operations
from bots.pipeline import Pipeline, PullChannel
from bots.ratelimit import limiter_for
from bots.records import Database, FileStore, Records, open_database
from bots.reports.citizens import citizen_key
from bots.reports.organisations import sync_organisations
from bots.settings import Settings
from bots.state import Store, open_store
from bots.takeover import TakeoverEngine
from flows import session as session_codec
from flows.compiler import CompiledBundle
from flows.engine import Engine
from flows.events import CertificateRequested, RecordEvent
from flows.schema import Bundle
from flows.session import Session
from flows.vocab import Channel, ConversationKey, Outbound

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
    # Each district's `channels:` as written (secrets still `$VAR`), for bots.channels.
    channels: tuple[tuple[str, Mapping[str, Any]], ...] = ()


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
        channels=tuple(_channels(compiled, loaded.bundle)),
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


def _channels(compiled: CompiledBundle, bundle: Bundle) -> list[tuple[str, Mapping[str, Any]]]:
    """(district slug, its channels) for every district that lists channels, in file order."""
    written: dict[str, Mapping[str, Any]] = {}
    stack = list(bundle.organisations.items())
    while stack:
        slug, node = stack.pop()
        if node.channels:
            written[slug] = node.channels
        stack.extend(node.children.items())
    return [(slug, written[slug]) for slug in compiled.districts if slug in written]


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
        # Called after a CertificateRequested is stored: the certificate service issues it in
        # the background, never under the conversation's lock (bots/certificates/issue.py).
        self.after_certificates: Callable[[], None] | None = None

    async def apply(
        self, key: ConversationKey, inbound_id: str, events: Sequence[RecordEvent], now: datetime
    ) -> None:
        await self.records.apply(key, inbound_id, events, now)
        if self.after_certificates is not None and any(
            isinstance(event, CertificateRequested) for event in events
        ):
            self.after_certificates()

    async def touch(self, key: ConversationKey, at: datetime, ref: str | None) -> None:
        await self.records.touch_identity(key, at, ref=ref)

    async def restore(self, key: ConversationKey, now: datetime) -> Session | None:
        profile = await self.records.load_profile(key)
        if not profile:
            return None
        return session_from_profile(profile, self.flows())

    async def last_inbound(self, key: ConversationKey) -> datetime | None:
        """When the person last wrote (the messaging window, bots/delivery.py)."""
        return await delivery.last_inbound_at(self.records.reads, key)

    async def undelivered(
        self, key: ConversationKey, message: Outbound, error: AdapterError, now: datetime
    ) -> None:
        """A reply failed for good: an organiser notification on the person's page."""
        await delivery.record_undelivered(self.records.sessions, key, message, error, now)


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
        env: Mapping[str, str] | None = None,
        serve_channels: bool | None = None,
        media_origins: Mapping[Channel, Sequence[str]] | None = None,
    ) -> None:
        """`env`: where `$VAR` secrets of flows.yaml's channels are read (default: the process
        environment). `serve_channels` (default: `recover`): build the messaging channels and run
        their background work (Telegram long polls, token refresh, health checks); `loa chat`
        leaves them to the server. `media_origins`: more hosts media may be fetched from (tests)."""
        self.settings = settings
        self.env = os.environ if env is None else env
        self.serve_channels = recover if serve_channels is None else serve_channels
        self.media_origins = dict(media_origins or {})
        self.channel_config: ChannelsConfig | None = None
        self.channels: Channels | None = None
        self.extra_adapters = dict(adapters or {})
        self.memory_store = memory_store
        self.sweep_every = sweep_every
        self.recover = recover  # `loa chat` leaves other channels' conversations to the server
        self.webchat = WebchatAdapter()
        self.media = MediaLibrary(settings.data_dir / "media")
        self.archive = BundleArchive(settings.bundles_dir, compile_archived)
        self.ops = Operations(settings)  # data-dir lock, disk guard, /metrics (bots/ops)
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
        self._citizen_key: bytes | None = None
        self.certificate_files = certificate_files(settings.data_dir)
        self.certificates: CertificateService | None = None
        self.first_admin_password: str | None = None  # printed once by `loa serve`
        from bots.reload import Reloader  # here: bots.reload imports this module

        self.reloader = Reloader(self)  # reload (console, SIGHUP) and follow other processes

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
    def db(self) -> Database:
        """The records database (the console and the certificate pages read it)."""
        if self._db is None:
            raise RuntimeError("runtime not started")
        return self._db

    @property
    def files(self) -> FileStore:
        """The content-addressed evidence files."""
        if self._files is None:
            raise RuntimeError("runtime not started")
        return self._files

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
        self.ops.check_image_upload()  # ImageRejected while the disk is (nearly) full
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
        if self.serve_channels:
            try:
                self.channel_config = read_config(flows.channels, self.settings, self.env)
            except ChannelConfigError as error:
                where = self.settings.config
                raise FlowsInvalid([f"{where}: {p}" for p in error.problems]) from None
        self.switch_flows(flows)
        return flows

    def switch_flows(self, flows: Flows) -> None:
        """Make a checked version live (at load, and on reload: bots/reload.py): archive it by
        content hash, index its media, and hand it to the engine. A session on a flow whose
        version changed finishes on its own version (the archive); new turns use this one.
        Channels are built once, at start: a changed `channels:` needs a restart."""
        versions = {fid: flow.version for fid, flow in flows.compiled.flows.items()}
        self.archive.keep(flows.version, flows.files, flows.base_dir, flows.media, versions)
        self.archive.remember(flows.version, flows.compiled)
        self.media.add_bundle(flows.base_dir, list(flows.media))
        self.flows = flows
        self.webchat.districts = tuple(slug for slug, _ in flows.webchat)
        engine = getattr(self._engine, "engine", self._engine)  # inside the TakeoverEngine
        if engine is not None:
            engine.bundle = flows.compiled

    async def start(self) -> None:
        flows = self.flows or self.load()
        self.ops.hold()  # before any database is opened: `loa restore` must wait for us
        # The key of citizen-ID numbers (docs/bao-cao.md): the engine hashes them as answered.
        self._citizen_key = citizen_key(self.settings.data_dir, self.env)
        # TakeoverEngine: a person answering from the Page inbox / OA chat pauses the bot.
        self._engine = TakeoverEngine(
            Engine(flows.compiled, self.archive, citizen_key=self._citizen_key)
        )
        await self._open_records()
        # Reports and the console's dashboard read the organisation tree from the records.
        await sync_organisations(self.db, flows.compiled)
        self._store = await open_store(
            redis_url=self.settings.redis_url,
            data_dir=self.settings.data_dir,
            memory=self.memory_store,
            lock_ttl=self.settings.lock_ttl,
            session_ttl=self.settings.session_ttl,
            prefix=self.settings.redis_prefix,
        )
        adapters: dict[Channel, Adapter | PullChannel] = {Channel.WEBCHAT: self.webchat}
        config = self.channel_config
        if config is not None and config.used and self._db is not None:
            self.channels = Channels(
                config, self.settings, database=self._db, local_file=self._media_file
            )
            adapters.update(self.channels.adapters())
        adapters.update(self.extra_adapters)
        self._pipeline = Pipeline(
            self._store,
            self._engine,
            session_codec,
            records=self._records,
            adapters=adapters,
            media_url=self.media.url,
            capture=(
                self.ops.disk.guarded(self._capture.capture) if self._capture is not None else None
            ),
            metrics=self.ops.metrics,
            limiter=limiter_for(self._store),  # per-credential rate limits (bots/ratelimit.py)
        )
        self.certificates = self._certificate_service(self._pipeline)
        if self.channels is not None:
            await self.channels.start(self._pipeline.ingest)
        if self.recover:
            recovered = await self._pipeline.recover()
            if recovered:
                log.info("resuming %d conversations left from the last run", recovered)
        if self.sweep_every > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        await self.ops.attach(self)  # metrics sources, event-loop lag, disk watch
        await self.reloader.start()  # publish or follow the deployment's flow version

    async def _open_records(self) -> None:
        self._files = FileStore(self.settings.files_dir)
        # Creates or migrates the schema (Alembic) before anything is served.
        self._db = await open_database(self.settings.database_url)
        records = Records(
            self._db.sessions, self._files, reads=self._db.reads, citizen_key=self._citizen_key
        )
        self._records = SqlRecords(records, lambda: self._current().compiled)
        # Evidence media: downloaded from the platform (or read back, for uploads already
        # stored), inspected in a process pool started on the first image (sha256, perceptual
        # hash, QR text), kept content-addressed. Telegram tokens come with the channels.
        self._capture = MediaCapture.from_settings(
            self.settings,
            files=self._files,
            telegram_token=self._telegram_token,
            extra_origins=self.media_origins,
        )

    def _telegram_token(self, district: str) -> str | None:
        config = self.channel_config
        return config.telegram_token(district) if config is not None else None

    def _media_file(self, reference: str) -> Path | None:
        """The file behind an outbound `/media/<name>` (Telegram uploads it)."""
        if reference.startswith(MEDIA_PREFIX):
            return self.media_file(reference[len(MEDIA_PREFIX) :])
        return None

    def media_file(self, name: str) -> Path | None:
        """What `/media/<name>` serves: the flows' sample images, and issued certificates
        (their names are content hashes no one can guess; evidence is never served there)."""
        return self.media.path(name) or media_path(self.certificate_files, name)

    def _certificate_service(self, pipeline: Pipeline) -> CertificateService:
        try:
            smtp = SmtpSettings.from_env(self.env)
        except MailConfigError as error:
            log.error("certificates will not be e-mailed: %s", error)
            smtp = None
        service = CertificateService(
            self.db,
            self.certificate_files,
            lambda: self._current().compiled,
            pipeline.ingest,
            base_url=self.settings.base_url,
            smtp=smtp,
        )
        if self._records is not None:
            self._records.after_certificates = service.kick
        if self.recover:
            service.start()  # the sweep: requests left by a crash, e-mail retries
        return service

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
        await self.reloader.stop()
        if self.channels is not None:
            await self.channels.stop_intake()  # no new inbound from long polls
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self.certificates is not None:
            await self.certificates.close()  # a drawing in progress finishes (or resumes later)
            self.certificates = None
        if self._pipeline is not None:
            self._pipeline.cancel_timers()  # deferred replies stay stored; `recover` finds them
            try:
                await asyncio.wait_for(self._pipeline.idle(), timeout=10)
            except TimeoutError:
                log.warning("stopping with conversations still running; they resume on start")
        if self.channels is not None:
            await self.channels.close()  # after the last delivery: it closes the HTTP session
            self.channels = None
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
        await self.ops.stop()
