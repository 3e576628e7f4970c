"""Why a piece of media was refused, and what the person is told (Vietnamese).

Every failure of fetching or inspecting is one `MediaError` subclass with a `reason` (an enum the
pipeline, logs and metrics can use) and a `text` for the person. `str(error)` is an English detail
for the operator's log; it never contains a platform URL's query or a bot token.

Errors cross the process pool (inspection runs in worker processes), so they keep their state in
ordinary attributes and take only the detail as a positional argument: they pickle as they are.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class MediaReason(enum.Enum):
    HOST_NOT_ALLOWED = "host_not_allowed"  # the URL (or a redirect) leaves the platform's hosts
    DOWNLOAD_FAILED = "download_failed"  # network, timeout, HTTP status, expired link, ...
    TOO_LARGE = "too_large"  # more bytes than the cap
    TOO_MANY_PIXELS = "too_many_pixels"  # more pixels than the cap (a decompression bomb)
    NOT_AN_IMAGE = "not_an_image"  # does not decode as a JPEG/PNG/WebP/GIF/BMP image
    UNSUPPORTED_FILE = "unsupported_file"  # a file of a type evidence may not be


class MediaError(Exception):
    """Media Loa will not keep. `image`: whether an image was expected (words the message);
    `limit`: the byte cap in force (quoted by the too-large message)."""

    reason: ClassVar[MediaReason] = MediaReason.DOWNLOAD_FAILED
    transient: bool = False  # worth one more try (a timeout, a 5xx), not a property of the media

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.image = True
        self.limit: int | None = None

    @property
    def text(self) -> str:
        """What the person reads (Vietnamese, NFC)."""
        return refusal_text(self.reason, image=self.image, limit=self.limit)


class HostNotAllowed(MediaError):
    reason = MediaReason.HOST_NOT_ALLOWED


class DownloadFailed(MediaError):
    reason = MediaReason.DOWNLOAD_FAILED

    def __init__(self, detail: str = "", *, transient: bool = False) -> None:
        super().__init__(detail)
        self.transient = transient


class TooLarge(MediaError):
    reason = MediaReason.TOO_LARGE

    def __init__(self, detail: str = "", *, read: int = 0) -> None:
        super().__init__(detail)
        self.read = read  # bytes received before giving up (0: refused on the declared size)


class TooManyPixels(TooLarge):
    reason = MediaReason.TOO_MANY_PIXELS


class NotAnImage(MediaError):
    reason = MediaReason.NOT_AN_IMAGE


class UnsupportedFile(MediaError):
    reason = MediaReason.UNSUPPORTED_FILE


def _megabytes(limit: int | None) -> str:
    if not limit:
        return "10"
    value = limit / 2**20
    return str(int(value)) if value.is_integer() else f"{value:.1f}".replace(".", ",")


def refusal_text(reason: MediaReason, *, image: bool = True, limit: int | None = None) -> str:
    """The Vietnamese message for a refusal; `image` picks "ảnh" or "tệp"."""
    noun = "ảnh" if image else "tệp"
    mb = _megabytes(limit)
    match reason:
        case MediaReason.HOST_NOT_ALLOWED | MediaReason.DOWNLOAD_FAILED:
            return (
                f"Mình chưa tải được {noun} bạn vừa gửi. "
                f"Bạn gửi lại {noun} trực tiếp trong khung chat giúp mình nhé."
            )
        case MediaReason.TOO_LARGE:
            if image:
                return (
                    f"Ảnh lớn quá {mb} MB. "
                    "Bạn chụp màn hình lại hoặc gửi ảnh nhỏ hơn giúp mình nhé."
                )
            return f"Tệp lớn quá {mb} MB. Bạn gửi tệp nhỏ hơn giúp mình nhé."
        case MediaReason.TOO_MANY_PIXELS:
            return "Ảnh có kích thước quá lớn. Bạn gửi ảnh chụp màn hình điện thoại giúp mình nhé."
        case MediaReason.NOT_AN_IMAGE:
            if image:
                return (
                    "Tệp bạn gửi không phải là ảnh hợp lệ. "
                    "Bạn gửi ảnh chụp màn hình (JPG hoặc PNG) giúp mình nhé."
                )
            return "Mình không đọc được tệp bạn gửi. Bạn kiểm tra rồi gửi lại giúp mình nhé."
        case MediaReason.UNSUPPORTED_FILE:
            return (
                "Mình chỉ nhận ảnh (JPG, PNG), tệp PDF hoặc tài liệu Word, Excel. "
                "Bạn gửi lại đúng loại tệp giúp mình nhé."
            )


__all__ = [
    "DownloadFailed",
    "HostNotAllowed",
    "MediaError",
    "MediaReason",
    "NotAnImage",
    "TooLarge",
    "TooManyPixels",
    "UnsupportedFile",
    "refusal_text",
]
