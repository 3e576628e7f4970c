"""The real server (aiohttp app over a real Runtime: SQLite records and store, media capture,
engine) pointed at fake platform servers on 127.0.0.1: Graph API, Zalo OA API + OAuth, Zalo Bot
API, Telegram Bot API, and a CDN for the pictures people send.

`tests/channels/flows.yaml` has two districts: Tân Phú (a Page, an OA, a Zalo Bot and a Telegram
bot) and Bến Tre (another Page and another OA of the same Meta and Zalo apps). Secrets are the
fake ones of tests/fixtures/signatures.json, passed as environment variables.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image, ImageDraw

from adapters.zalo import TokenPair, signature
from bots import delivery
from bots.ratelimit import Rate
from bots.runtime import Runtime
from bots.server import build_app
from bots.settings import from_env
from flows.vocab import Channel, Inbound
from tests.fakes.graph_api import FakeGraphApi
from tests.fakes.telegram_api import FakeTelegramApi
from tests.fakes.zalo_api import FakeZaloApi
from tests.fakes.zalobot_api import FakeZaloBotApi

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
SECRETS: dict[str, str] = json.loads((FIXTURES / "signatures.json").read_text())["fake_secrets"]
HEADERS: dict[str, dict[str, str]] = json.loads((FIXTURES / "signatures.json").read_text())[
    "headers"
]

MESSENGER_SECRET = SECRETS["messenger_app_secret"]
ZALO_APP_ID = SECRETS["zalo_app_id"]
ZALO_OA_SECRET = SECRETS["zalo_oa_secret_key"]
TG_SECRET = SECRETS["telegram_secret_token"]
ZALOBOT_SECRET = SECRETS["zalobot_secret_token"]
ZALO_APP_SECRET = "fake-zalo-app-secret-0000"
VERIFY_TOKEN = "fake-verify-token-0000"
TANPHU_PAGE, BENTRE_PAGE = "111111111111111", "555555555555555"
TANPHU_OA, BENTRE_OA = "2222222222222222222", "6666666666666666666"
TANPHU_PAGE_TOKEN, BENTRE_PAGE_TOKEN = "page-token-tan-phu", "page-token-ben-tre"
ZALOBOT_TOKEN = "1234567890:fake-zalobot-token"
TG_TOKEN = "123456789:FAKE-telegram-token_0001"
CODE_VERIFIER = "fake-code-verifier-" + "x" * 40


def png(seed: str, size: tuple[int, int] = (120, 90)) -> bytes:
    """A small real PNG, different for every seed."""
    digest = hashlib.sha256(seed.encode()).digest()
    image = Image.new("RGB", size, tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 10 + digest[3] % 80, 10 + digest[4] % 60), fill=tuple(digest[5:8]))
    draw.text((5, 60), seed[:16], fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class FakeCdn:
    """Serves a distinct PNG for every path (a PDF for `.pdf`), and records what was fetched."""

    def __init__(self) -> None:
        self.fetched: list[str] = []
        self.delay = 0.0  # seconds before answering (a slow CDN)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.Response:
        path = request.path
        self.fetched.append(path)
        if self.delay:
            await asyncio.sleep(self.delay)
        if path.endswith(".pdf"):
            body = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
            return web.Response(body=body, content_type="application/pdf")
        return web.Response(body=png(path), content_type="image/png")

    async def start(self) -> FakeCdn:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Platforms:
    graph: FakeGraphApi
    zalo: FakeZaloApi
    zalobot: FakeZaloBotApi
    telegram: FakeTelegramApi
    cdn: FakeCdn


@pytest.fixture
async def platforms() -> AsyncIterator[Platforms]:
    graph = await FakeGraphApi(
        tokens={TANPHU_PAGE_TOKEN, BENTRE_PAGE_TOKEN}, app_secret=MESSENGER_SECRET
    ).start()
    zalo = await FakeZaloApi(app_id=ZALO_APP_ID, app_secret=ZALO_APP_SECRET).start()
    zalobot = await FakeZaloBotApi(token=ZALOBOT_TOKEN).start()
    telegram = await FakeTelegramApi(token=TG_TOKEN).start()
    cdn = await FakeCdn().start()
    try:
        yield Platforms(graph, zalo, zalobot, telegram, cdn)
    finally:
        for fake in (graph, zalo, zalobot, telegram, cdn):
            await fake.close()


def write_flows(folder: Path, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flows.yaml"
    path.write_text(text or (HERE / "flows.yaml").read_text("utf-8"), encoding="utf-8")
    (folder / "media").mkdir(exist_ok=True)
    (folder / "media" / "mau-vneid.png").write_bytes(png("mau-vneid"))
    return path


def environment(platforms: Platforms, tmp_path: Path, flows: Path) -> dict[str, str]:
    return {
        "LOA_CONFIG": str(flows),
        "LOA_DATA_DIR": str(tmp_path / "var"),
        "LOA_PUBLIC_URL": "https://loa.example.vn",
        "LOA_GRAPH_API": platforms.graph.url,
        "LOA_ZALO_API": platforms.zalo.url,
        "LOA_ZALO_OAUTH": platforms.zalo.oauth_url,
        "LOA_ZALOBOT_API": platforms.zalobot.url,
        "LOA_TELEGRAM_API": platforms.telegram.url,
        "LOA_MESSENGER_APP_SECRET": MESSENGER_SECRET,
        "LOA_MESSENGER_APP_ID": platforms.graph.app_id,
        "LOA_MESSENGER_VERIFY_TOKEN": VERIFY_TOKEN,
        "LOA_ZALO_APP_ID": ZALO_APP_ID,
        "LOA_ZALO_APP_SECRET": ZALO_APP_SECRET,
        "LOA_ZALO_OA_SECRET_KEY": ZALO_OA_SECRET,
        "LOA_ZALO_CODE_VERIFIER": CODE_VERIFIER,
        "LOA_ZALO_SITE_VERIFICATION": "FakeVerifyCode0001",
        "LOA_CHANNEL_HEALTH_EVERY": "0",
        "TANPHU_PAGE_TOKEN": TANPHU_PAGE_TOKEN,
        "BENTRE_PAGE_TOKEN": BENTRE_PAGE_TOKEN,
        "TANPHU_ZALOBOT_TOKEN": ZALOBOT_TOKEN,
        "TANPHU_ZALOBOT_SECRET": ZALOBOT_SECRET,
        "TANPHU_TELEGRAM_TOKEN": TG_TOKEN,
        "TANPHU_TELEGRAM_SECRET": TG_SECRET,
    }


@pytest.fixture(autouse=True)
def fast_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Telegram's and the Zalo Bot's one-message-a-second-per-chat limit would make a full
    conversation take half a minute; the limiter itself is tested with the delivery policy."""
    fast = delivery.Limits(Rate(1000, 1000), Rate(1000, 1000))
    limits = dict(delivery.LIMITS)
    for channel in (Channel.TELEGRAM, Channel.ZALOBOT, Channel.ZALO, Channel.MESSENGER):
        limits[channel] = fast
    monkeypatch.setattr(delivery, "LIMITS", limits)


_REAL_CDNS = ("scontent", "cdn.fbsbx.com", "lookaside", "zdn.vn", "zadn.vn")


@dataclass
class Server:
    """The app under test, its runtime, the fakes and helpers to post signed webhooks."""

    client: TestClient
    runtime: Runtime
    platforms: Platforms
    env: dict[str, str]
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def pipeline(self) -> Any:
        return self.runtime.pipeline

    @property
    def channels(self) -> Any:
        assert self.runtime.channels is not None
        return self.runtime.channels

    def next_id(self) -> int:
        return next(self._ids)

    # -- signed posts ---------------------------------------------------------------------------

    async def post_messenger(self, body: bytes, *, sign: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if sign:
            digest = hashlib.sha256  # noqa: F841  (documenting the algorithm)
            import hmac

            mac = hmac.new(MESSENGER_SECRET.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature-256"] = f"sha256={mac}"
        return await self.client.post("/webhooks/messenger", data=body, headers=headers)

    async def post_zalo(self, body: bytes, *, sign: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if sign:
            timestamp = str(json.loads(body)["timestamp"])
            mac = signature(ZALO_APP_ID, body, timestamp, ZALO_OA_SECRET)
            headers["X-ZEvent-Signature"] = f"mac={mac}"
        return await self.client.post("/webhooks/zalo", data=body, headers=headers)

    async def post_zalobot(self, body: bytes, district: str = "tan-phu") -> Any:
        headers = {"Content-Type": "application/json", "X-Bot-Api-Secret-Token": ZALOBOT_SECRET}
        return await self.client.post(f"/webhooks/zalobot/{district}", data=body, headers=headers)

    async def post_telegram(self, body: bytes, district: str = "tan-phu") -> Any:
        headers = {
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": TG_SECRET,
        }
        return await self.client.post(f"/webhooks/telegram/{district}", data=body, headers=headers)

    # -- waiting --------------------------------------------------------------------------------

    async def settle(self, timeout: float = 20.0) -> None:
        """Until every worker and sender of the pipeline is done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.pipeline.idle()
            await asyncio.sleep(0.05)
            if not self.pipeline._tasks and not self.pipeline._running:
                return
        raise AssertionError("the pipeline did not settle")


async def wait_until(
    check: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float = 15.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def _local_cdn(cdn: FakeCdn, inbound: Inbound) -> Inbound:
    """The fixtures' attachment URLs are on the platforms' real CDNs: fetch them from the
    local stand-in (same path) instead. Everything else about capture stays real."""
    attachments = []
    for attachment in inbound.attachments:
        url = attachment.url
        if url and any(host in url for host in _REAL_CDNS):
            path = url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0]
            attachment = replace(attachment, url=f"{cdn.url}/{path}")
        attachments.append(attachment)
    return replace(inbound, attachments=tuple(attachments))


async def start_server(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    platforms: Platforms,
    tmp_path: Path,
    *,
    flows_text: str | None = None,
    env_changes: dict[str, str] | None = None,
    authorise_zalo: bool = True,
) -> Server:
    flows = write_flows(tmp_path / "conf", flows_text)
    env = environment(platforms, tmp_path, flows)
    env.update(env_changes or {})
    settings = from_env(env)
    cdn = platforms.cdn
    runtime = Runtime(
        settings,
        env=env,
        sweep_every=0,
        media_origins={
            Channel.MESSENGER: [cdn.url],
            Channel.ZALO: [cdn.url],
            Channel.ZALOBOT: [cdn.url],
        },
    )
    app = build_app(runtime)
    client = await aiohttp_client(app)
    pipeline = runtime.pipeline
    real_capture = pipeline.capture
    if real_capture is not None:

        async def capture(inbound: Inbound) -> Inbound:
            return await real_capture(_local_cdn(cdn, inbound))

        pipeline.capture = capture
    server = Server(client, runtime, platforms, env)
    channels = runtime.channels
    if channels is not None:
        channels.zalo_grace = 0.4
        keeper = channels.zalo_keeper
        if keeper is not None and authorise_zalo:
            for oa_id in (TANPHU_OA, BENTRE_OA):
                access, refresh = platforms.zalo.grant(oa_id)
                await keeper.store_initial(oa_id, TokenPair(access, refresh, 90_000))
    return server


@pytest.fixture
async def server(
    aiohttp_client: Callable[..., Awaitable[TestClient]], platforms: Platforms, tmp_path: Path
) -> AsyncIterator[Server]:
    yield await start_server(aiohttp_client, platforms, tmp_path)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


__all__ = [
    "FIXTURES",
    "HEADERS",
    "Platforms",
    "Server",
    "fixture_bytes",
    "png",
    "shutil",
    "start_server",
    "wait_until",
]
