"""Checking an uploaded image before anything is stored: size cap, decodes fully, not a bomb.

Used by the browser chat's upload and `loa chat`'s `/image`. Decoding is CPU work, so callers
run `check_image` in a process pool (see `bots.runtime`), never on the event loop.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MAX_BYTES = 10 * 2**20  # what one upload may weigh (a phone screenshot is well under 5 MB)
MAX_PIXELS = 40_000_000  # 40 MP: above any phone screen or camera in use; stops pixel bombs

# Pillow refuses images above twice this outright and warns above it (made an error below).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}

NOT_AN_IMAGE = (
    "Tệp bạn gửi không phải là ảnh hợp lệ. Bạn gửi ảnh chụp màn hình (JPG hoặc PNG) giúp mình nhé."
)
TOO_LARGE = "Ảnh lớn quá 10 MB. Bạn chụp màn hình lại hoặc gửi ảnh nhỏ hơn giúp mình nhé."
TOO_MANY_PIXELS = "Ảnh có kích thước quá lớn. Bạn gửi ảnh chụp màn hình điện thoại giúp mình nhé."
EMPTY = "Bạn chưa chọn ảnh nào."


class ImageRejected(ValueError):
    """Not an image Loa accepts; the message is shown to the person as it is."""


@dataclass(frozen=True, slots=True)
class CheckedImage:
    mime: str
    width: int
    height: int
    size: int  # bytes


def check_image(data: bytes) -> CheckedImage:
    """Raise `ImageRejected` unless `data` is a whole JPEG/PNG/WebP/GIF/BMP within the limits."""
    if not data:
        raise ImageRejected(EMPTY)
    if len(data) > MAX_BYTES:
        raise ImageRejected(TOO_LARGE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format or ""
                width, height = image.size
                if fmt not in FORMATS:
                    raise ImageRejected(NOT_AN_IMAGE)
                if width * height > MAX_PIXELS:
                    raise ImageRejected(TOO_MANY_PIXELS)
                image.load()  # decode every pixel: a truncated or corrupt file fails here
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(TOO_MANY_PIXELS) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise ImageRejected(NOT_AN_IMAGE) from None
    return CheckedImage(mime=FORMATS[fmt], width=width, height=height, size=len(data))


EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/bmp": "bmp",
}
