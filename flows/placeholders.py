"""`{field}` placeholders in flow texts, and the fields every flow can use without saving them.

A placeholder is a field name in braces: `Cảm ơn {ho_ten}!`. `{{` and `}}` write a literal
brace. A field is known if some step of the bundle saves it (`save:` or an `evidence:` key) or
it is one of `BUILTIN_FIELDS`, which the engine fills in from the conversation's context.
The same names may be used in branch conditions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# name -> what the engine puts there (Vietnamese, for the organiser's documentation)
BUILTIN_FIELDS: dict[str, str] = {
    "ten_chien_dich": "tên chiến dịch của kịch bản (title của campaign)",
    "dot": "tên đợt đang mở của chiến dịch, VD: Đợt 1",
    "tu_ngay": "ngày bắt đầu đợt đang mở, VD: 07/08/2023",
    "den_ngay": "ngày kết thúc đợt đang mở, VD: 14/09/2023",
    "to_chuc": "tên đơn vị (quận, huyện, trường) sở hữu kênh đang trò chuyện",
    "kenh": "kênh đang trò chuyện: messenger, zalo, zalobot, telegram, webchat",
}

FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
# A single `{`, up to 64 characters without braces or line breaks, a single `}`.
_PLACEHOLDER = re.compile(r"(?<!\{)\{([^{}\n]{1,64})\}(?!\})")


@dataclass(frozen=True, slots=True)
class Placeholder:
    raw: str  # as written, braces included: "{ho_ten}"
    name: str  # the content, stripped
    offset: int  # index of "{" in the text

    @property
    def valid(self) -> bool:
        return FIELD_NAME.fullmatch(self.name) is not None


def placeholders(text: str) -> list[Placeholder]:
    """Every `{...}` in `text`, in order (valid field names or not)."""
    return [
        Placeholder(m.group(0), m.group(1).strip(), m.start())
        for m in _PLACEHOLDER.finditer(text)
    ]


__all__ = ["BUILTIN_FIELDS", "FIELD_NAME", "Placeholder", "placeholders"]
