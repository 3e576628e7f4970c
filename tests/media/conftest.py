"""Media test fixtures: generated images, a fake CDN and a fake Telegram Bot API on 127.0.0.1.

Everything is made here (Pillow, zxing-cpp's QR writer); nothing reaches the internet.

`FakeCdn` serves:
    /img/{name}                 a stored body (`cdn.files[name] = (bytes, content_type)`)
    /hop/{n}/{name}             a chain of n redirects ending at /img/{name}
    /to?location=<url>          one redirect to any URL
    /huge                       an endless image body without Content-Length (counts bytes sent)
    /declared                   a response declaring a 1 GB body
    /slow                       headers after `cdn.slow_for` seconds
    /gzip/{name}                the body with Content-Encoding: gzip
    /status/{code}              that HTTP status
    /flaky/{name}               503 the first `cdn.flaky` times, then the body
    /bot{token}/getFile         Telegram getFile (`cdn.tg_files[file_id] = (path, bytes)`)
    /file/bot{token}/{path}     Telegram file download
Every request's path is recorded in `cdn.seen` (and as sent, with its query, in `cdn.raw`).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import io
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from aiohttp import web
from PIL import Image, ImageDraw

from bots.media.fetch import Fetcher, FetchLimits, Origins
from bots.media.inspect import InspectPool

TOKEN = "123456:SECRET-token_value"

# A VietQR (EMVCo) payload of a bank account, as bank apps show in "Mã QR của tôi".
VIETQR = (
    "00020101021138570010A00000072701270006970422011303412345678900208QRIBFTTA"
    "53037045802VN62150811Nguyen Van A6304ABCD"
)


# -- images -------------------------------------------------------------------------------------


def screenshot(seed: int = 1, size: tuple[int, int] = (360, 640), fmt: str = "PNG") -> bytes:
    """A phone-screenshot-like image: bars and blocks placed by `seed`."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle((0, 0, width, 60), fill=(0, 90, 170))
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width - 60)), int(rng.integers(70, height - 40))
        x1, y1 = x0 + int(rng.integers(20, 60)), y0 + int(rng.integers(10, 40))
        shade = tuple(int(v) for v in rng.integers(0, 200, 3))
        draw.rectangle((x0, y0, x1, y1), fill=shade)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def reencoded(data: bytes, fmt: str = "JPEG") -> bytes:
    """The same picture saved again (what a platform's recompression does)."""
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, fmt, quality=80)
        return out.getvalue()


def qr_screenshot(payload: str = VIETQR) -> bytes:
    """A screenshot with a QR code in it, written by zxing-cpp (segno is not installed)."""
    code = zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.QRCode)
    qr = Image.fromarray(np.array(code.to_image(scale=6))).convert("RGB")
    image = Image.new("RGB", (qr.width + 200, qr.height + 500), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, image.width, 80), fill=(200, 30, 40))
    image.paste(qr, (100, 200))
    draw.rectangle((40, image.height - 120, image.width - 40, image.height - 60), fill="gray")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@functools.cache
def bomb_png(side: int = 10_000) -> bytes:
    """A valid PNG of side×side pixels (100 MP: over twice the 40 MP limit) that compresses to a
    few kilobytes: a decompression bomb."""
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, "PNG")
    return out.getvalue()


def pdf_bytes() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )


def docx_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


# -- the fake CDN and Bot API -------------------------------------------------------------------


class FakeCdn:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.tg_files: dict[str, tuple[str, bytes]] = {}  # file_id → (file_path, body)
        self.tg_sizes: dict[str, int] = {}  # file_id → file_size to announce (default: real)
        self.seen: list[str] = []
        self.raw: list[str] = []  # path and query exactly as requested
        self.slow_for = 5.0
        self.flaky = 0
        self.huge_total = 64 * 2**20
        self.huge_sent = 0
        self.huge_done = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeCdn:
        app = web.Application()
        app.router.add_get("/img/{name}", self._img)
        app.router.add_get("/hop/{n}/{name}", self._hop)
        app.router.add_get("/to", self._to)
        app.router.add_get("/huge", self._huge)
        app.router.add_get("/declared", self._declared)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/gzip/{name}", self._gzip)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/flaky/{name}", self._flaky)
        app.router.add_get("/bot{token}/getFile", self._get_file)
        app.router.add_get("/file/bot{token}/{path:.+}", self._tg_download)
        app.middlewares.append(self._record)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(
        self, request: web.Request, handler: web.RequestHandler
    ) -> web.StreamResponse:
        self.seen.append(request.path)
        self.raw.append(request.raw_path)
        return await handler(request)

    def _body(self, name: str) -> web.Response:
        if name not in self.files:
            raise web.HTTPNotFound()
        body, content_type = self.files[name]
        return web.Response(body=body, content_type=content_type)

    async def _img(self, request: web.Request) -> web.Response:
        return self._body(request.match_info["name"])

    async def _hop(self, request: web.Request) -> web.Response:
        n, name = int(request.match_info["n"]), request.match_info["name"]
        target = f"/hop/{n - 1}/{name}" if n > 1 else f"/img/{name}"
        raise web.HTTPFound(target)

    async def _to(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["location"])

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "image/png"
        await response.prepare(request)
        chunk = b"\x89PNG" + b"\0" * (64 * 1024 - 4)
        try:
            while self.huge_sent < self.huge_total:
                await response.write(chunk)
                self.huge_sent += len(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.huge_done.set()
        return response

    async def _declared(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "image/png"
        response.content_length = 2**30
        await response.prepare(request)
        await response.write(b"\x89PNG\r\n\x1a\n")
        await asyncio.sleep(2)
        return response

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.slow_for)
        return web.Response(body=b"late")

    async def _gzip(self, request: web.Request) -> web.Response:
        body, content_type = self.files[request.match_info["name"]]
        return web.Response(
            body=gzip.compress(body),
            content_type=content_type,
            headers={"Content-Encoding": "gzip"},
        )

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def _flaky(self, request: web.Request) -> web.Response:
        if self.flaky > 0:
            self.flaky -= 1
            return web.Response(status=503, text="busy")
        return self._body(request.match_info["name"])

    def _tg_refuse(self, code: int, description: str) -> web.Response:
        body = {"ok": False, "error_code": code, "description": description}
        return web.json_response(body, status=code)

    async def _get_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return self._tg_refuse(401, "Unauthorized")
        file_id = request.query.get("file_id", "")
        if file_id == "too-big":
            return self._tg_refuse(400, "Bad Request: file is too big")
        if file_id not in self.tg_files:
            return self._tg_refuse(400, "Bad Request: invalid file_id")
        path, body = self.tg_files[file_id]
        result = {
            "file_id": file_id,
            "file_unique_id": "u-" + file_id,
            "file_size": self.tg_sizes.get(file_id, len(body)),
            "file_path": path,
        }
        return web.json_response({"ok": True, "result": result})

    async def _tg_download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            raise web.HTTPNotFound()
        for path, body in self.tg_files.values():
            if path == request.match_info["path"]:
                return web.Response(body=body, content_type="application/octet-stream")
        raise web.HTTPNotFound()


@pytest.fixture
async def cdn() -> AsyncIterator[FakeCdn]:
    server = await FakeCdn().start()
    yield server
    await server.stop()


@pytest.fixture
async def cdn2() -> AsyncIterator[FakeCdn]:
    """A second allowed media host (a redirect chain that crosses hosts)."""
    server = await FakeCdn().start()
    yield server
    await server.stop()


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    client = Fetcher(FetchLimits(max_bytes=2 * 2**20, read_timeout=2.0, total_timeout=5.0))
    yield client
    await client.close()


def local_origins(*servers: FakeCdn) -> Origins:
    return Origins.of(bases=[s.url for s in servers])


@pytest.fixture(scope="session")
def pool() -> Iterator[InspectPool]:
    """One inspection pool for the whole run (starting processes is the slow part)."""
    inspect_pool = InspectPool(workers=2)
    yield inspect_pool
    inspect_pool.shutdown()


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    return tmp_path / "files"
