"""What a piece of media is: sniffed, decoded, hashed, its QR codes read; in a process pool.

`inspect_sync(data, want_image, limits)` is the CPU work; it runs in worker processes of an
`InspectPool` (never on the event loop). An image must decode with Pillow — `Image.open` limited
to JPEG/PNG/WebP/GIF/BMP (no exotic decoders, no Ghostscript), `verify()`, then a fresh `open` and
a full `load()` — within `max_pixels` (about 40 MP: Pillow's decompression-bomb check; its warning
above the limit and its error above twice the limit are both a refusal). Then: SHA-256 of the
bytes, a perceptual hash (`imagehash.phash`, a weak near-duplicate hint) and the text of any QR
code (`zxingcpp.read_barcodes`; a bank or app account QR identifies the person's account far
better than a picture hash). Other files are sniffed by their magic bytes, never decoded; only
PDF and Office documents (and text lists) are accepted as evidence files.

The pool uses the `forkserver` start method: workers fork from a small server process that has
imported only this module (Pillow, imagehash, zxing-cpp), never from the event loop's process with
its database and Redis threads, and they never re-run the caller's main module.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import multiprocessing
import os
import warnings
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import imagehash

# imagehash.phash imports scipy's FFT on every call: load it once, in the fork server.
import scipy.fftpack  # noqa: F401
import zxingcpp
from PIL import Image, UnidentifiedImageError

from bots.media.errors import (
    MediaError,
    NotAnImage,
    TooLarge,
    TooManyPixels,
    UnsupportedFile,
)
from bots.media.limits import MAX_BYTES, MAX_PIXELS

log = logging.getLogger("loa.media")

T = TypeVar("T")

# Pillow's names of the formats evidence images may have, and their MIME types.
IMAGE_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
_QR_FORMATS = zxingcpp.barcode_formats_from_str("QRCode,MicroQRCode,RMQRCode")

# Files (not images) accepted as evidence: documents an organiser can open.
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
MS_OFFICE = "application/x-ole-storage"  # .doc/.xls/.ppt (the container; the name tells which)
CSV = "text/csv"
TEXT = "text/plain"
FILE_TYPES = frozenset({PDF, DOCX, XLSX, PPTX, ODT, ODS, MS_OFFICE, CSV, TEXT})


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS


@dataclass(frozen=True, slots=True)
class MediaFacts:
    """What inspecting one piece of media found."""

    sha256: str  # hex, of the bytes as received (the content-addressed store's key)
    size: int  # bytes
    mime: str  # sniffed from the content, never the platform's claim
    format: str | None = None  # Pillow's format name for images ("PNG")
    width: int | None = None
    height: int | None = None
    phash: str | None = None  # imagehash.phash as 16 hex digits (images only)
    qr: tuple[str, ...] = ()  # text of each QR code found, in reading order

    @property
    def is_image(self) -> bool:
        return self.format is not None

    @property
    def qr_text(self) -> str | None:
        """All QR texts in one string (one per line), as the evidence record keeps it."""
        return "\n".join(self.qr) if self.qr else None


# -- sniffing -----------------------------------------------------------------------------------


def sniff(data: bytes, name: str | None = None) -> str:
    """The MIME type by magic bytes ("application/octet-stream" when unknown). `name` (the
    original file name) only tells apart what the content cannot: .doc/.xls, .csv/.txt."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM") and data[6:10] == b"\0\0\0\0":  # reserved bytes are zero
        return "image/bmp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
        return "image/heic" if data[8:12] != b"avif" else "image/avif"
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(data)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return MS_OFFICE
    if _is_text(data):
        lower = (name or "").lower()
        return CSV if lower.endswith(".csv") else TEXT
    return "application/octet-stream"


def _zip_kind(data: bytes) -> str:
    """OOXML and OpenDocument files are ZIP archives; only their directory is read."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            if "mimetype" in names:
                info = archive.getinfo("mimetype")
                if info.file_size <= 100:
                    kind = archive.read("mimetype").decode("ascii", "replace").strip()
                    if kind in (ODT, ODS):
                        return kind
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, NotImplementedError):
        return "application/zip"
    if "[Content_Types].xml" in names:
        for prefix, kind in (("word/", DOCX), ("xl/", XLSX), ("ppt/", PPTX)):
            if any(n.startswith(prefix) for n in names):
                return kind
    return "application/zip"


def _is_text(data: bytes) -> bool:
    if not data or b"\x00" in data[:4096]:
        return False
    sample = data[:4096]
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as error:
        # a multi-byte character cut by the sample's end is still text
        return error.start >= len(sample) - 3
    return True


# -- the work (in a worker process) --------------------------------------------------------------


def inspect_sync(
    data: bytes, want_image: bool = True, limits: Limits | None = None, name: str | None = None
) -> MediaFacts:
    """Inspect `data`. `want_image`: it must be an image (else any accepted file type; an image
    sent as a file is still decoded and hashed). Raises TooLarge, TooManyPixels, NotAnImage,
    UnsupportedFile."""
    limits = limits or Limits()
    if len(data) > limits.max_bytes:
        raise TooLarge(f"{len(data)} bytes, cap {limits.max_bytes}", read=len(data))
    if not data:
        raise NotAnImage("empty") if want_image else UnsupportedFile("empty")
    mime = sniff(data, name)
    sha = hashlib.sha256(data).hexdigest()
    if want_image or mime in IMAGE_FORMATS.values():
        return _inspect_image(data, sha, limits)
    if mime not in FILE_TYPES:
        raise UnsupportedFile(f"content is {mime}")
    return MediaFacts(sha256=sha, size=len(data), mime=mime)


def _inspect_image(data: bytes, sha: str, limits: Limits) -> MediaFacts:
    # The worker process is Loa's own: setting Pillow's global limit here is safe.
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    formats = list(IMAGE_FORMATS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as image:
                fmt = image.format or ""
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise TooManyPixels(f"{width}x{height}")
                image.verify()  # structure and checksums, without decoding
            with Image.open(io.BytesIO(data), formats=formats) as image:
                image.load()  # every pixel: a truncated or corrupt file fails here
                gray = image.convert("L")
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise TooManyPixels(str(error)) from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        IndexError,
        TypeError,
        MemoryError,
    ) as error:
        raise NotAnImage(f"does not decode: {type(error).__name__}") from None
    if fmt not in IMAGE_FORMATS:
        raise NotAnImage(f"format {fmt!r}")
    phash = str(imagehash.phash(gray))
    codes = zxingcpp.read_barcodes(gray, formats=_QR_FORMATS)
    qr = tuple(dict.fromkeys(code.text for code in codes if code.text))  # in order, once each
    return MediaFacts(
        sha256=sha,
        size=len(data),
        mime=IMAGE_FORMATS[fmt],
        format=fmt,
        width=width,
        height=height,
        phash=phash,
        qr=qr,
    )


# -- the pool -----------------------------------------------------------------------------------


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # Workers fork from a server that imported this module (and so Pillow, imagehash,
        # scipy's FFT and zxing-cpp) once; not the caller's main module.
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


class InspectPool:
    """A lazily started `ProcessPoolExecutor` for media work. `workers`: processes (default:
    the CPU count, at most 4). `max_tasks_per_child` recycles a worker now and then, so a
    decoder's leak or fragmentation cannot grow for ever."""

    def __init__(self, workers: int | None = None, *, max_tasks_per_child: int | None = 200):
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.max_tasks_per_child = max_tasks_per_child
        self._executor: ProcessPoolExecutor | None = None

    def executor(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_context(),
                max_tasks_per_child=self.max_tasks_per_child,
            )
        return self._executor

    async def start(self) -> None:
        """Start the workers now (server start-up) rather than on the first image: the fork
        server imports Pillow, NumPy and SciPy's FFT once, which takes a second or two."""
        await asyncio.gather(*(self.run(os.getpid) for _ in range(self.workers)))

    @property
    def started(self) -> bool:
        return self._executor is not None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker process (`fn` and its arguments must pickle)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor(), fn, *args)
        except BrokenProcessPool:
            # A worker died (killed, out of memory, a crashing decoder): start afresh next time.
            log.error("media worker process died; the pool is restarted")
            self.shutdown(wait=False)
            raise

    async def inspect(
        self,
        data: bytes,
        *,
        want_image: bool = True,
        limits: Limits | None = None,
        name: str | None = None,
    ) -> MediaFacts:
        try:
            return await self.run(inspect_sync, data, want_image, limits or Limits(), name)
        except BrokenProcessPool:
            error = NotAnImage("the inspecting process died")
            error.image = want_image
            raise error from None

    def shutdown(self, wait: bool = True) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)

    async def aclose(self) -> None:
        """Stop the workers without blocking the event loop."""
        await asyncio.to_thread(self.shutdown, True)


_default: InspectPool | None = None


def default_pool() -> InspectPool:
    """The process-wide pool `inspect_bytes` uses when given none."""
    global _default
    if _default is None:
        _default = InspectPool()
    return _default


async def inspect_bytes(
    data: bytes,
    *,
    want_image: bool = True,
    pool: InspectPool | None = None,
    limits: Limits | None = None,
    name: str | None = None,
) -> MediaFacts:
    """Inspect bytes already in hand (a browser upload) exactly as downloaded media is.
    Raises a `MediaError` (TooLarge, TooManyPixels, NotAnImage, UnsupportedFile)."""
    return await (pool or default_pool()).inspect(
        data, want_image=want_image, limits=limits, name=name
    )


__all__ = [
    "FILE_TYPES",
    "IMAGE_FORMATS",
    "MAX_PIXELS",
    "InspectPool",
    "Limits",
    "MediaFacts",
    "default_pool",
    "inspect_bytes",
    "inspect_sync",
    "sniff",
]
