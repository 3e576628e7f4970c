"""Evidence media: download from the platform's own hosts, inspect in a process pool, store.

    media = MediaCapture.from_settings(settings, files=file_store, telegram_token=token_of)
    inbound = await media.capture(inbound)        # raises MediaError: tell the person error.text
    facts = await media.inspect_bytes(upload)     # bytes already in hand (browser uploads)
    await media.close()

See docs/media.md for the rules (allowed hosts, caps, what is refused and why).

Names are imported on first use: the inspection workers' fork server imports
`bots.media.inspect`, and with it this package, and must not drag in aiohttp or the records
database (seconds of imports) that only the event-loop process needs. The function `capture`
is imported from `bots.media.capture` (the package attribute of that name is the module).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bots.media.capture import Captured, MediaCapture, MediaConfig
    from bots.media.errors import (
        DownloadFailed,
        HostNotAllowed,
        MediaError,
        MediaReason,
        NotAnImage,
        TooLarge,
        TooManyPixels,
        UnsupportedFile,
        refusal_text,
    )
    from bots.media.fetch import Fetcher, FetchLimits, Origins, channel_origins
    from bots.media.inspect import InspectPool, Limits, MediaFacts, inspect_bytes

_WHERE = {
    "Captured": "capture",
    "MediaCapture": "capture",
    "MediaConfig": "capture",
    "DownloadFailed": "errors",
    "HostNotAllowed": "errors",
    "MediaError": "errors",
    "MediaReason": "errors",
    "NotAnImage": "errors",
    "TooLarge": "errors",
    "TooManyPixels": "errors",
    "UnsupportedFile": "errors",
    "refusal_text": "errors",
    "FetchLimits": "fetch",
    "Fetcher": "fetch",
    "Origins": "fetch",
    "channel_origins": "fetch",
    "InspectPool": "inspect",
    "Limits": "inspect",
    "MediaFacts": "inspect",
    "inspect_bytes": "inspect",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bots.media' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bots.media.{module}"), name)


__all__ = [
    "Captured",
    "DownloadFailed",
    "FetchLimits",
    "Fetcher",
    "HostNotAllowed",
    "InspectPool",
    "Limits",
    "MediaCapture",
    "MediaConfig",
    "MediaError",
    "MediaFacts",
    "MediaReason",
    "NotAnImage",
    "Origins",
    "TooLarge",
    "TooManyPixels",
    "UnsupportedFile",
    "channel_origins",
    "inspect_bytes",
    "refusal_text",
]
