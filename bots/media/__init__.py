"""Evidence media: download from the platform's own hosts, inspect in a process pool, store.

    media = MediaCapture.from_settings(settings, files=file_store, telegram_token=token_of)
    inbound = await media.capture(inbound)        # raises MediaError: tell the person error.text
    facts = await media.inspect_bytes(upload)     # bytes already in hand (browser uploads)
    await media.close()

See docs/media.md for the rules (allowed hosts, caps, what is refused and why).
"""

from bots.media.capture import Captured, MediaCapture, MediaConfig, capture
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
    "capture",
    "channel_origins",
    "inspect_bytes",
    "refusal_text",
]
