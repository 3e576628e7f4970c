"""Text helpers the Zalo adapters share: NFC, length as platforms count it, sentence splitting,
numbered choices.

Platforms count characters differently (code points, UTF-16 units); counting UTF-16 code units
is never shorter than counting code points, so a part that fits in UTF-16 units fits everywhere.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from flows.vocab import Choice


def nfc(text: str) -> str:
    """NFC form: some keyboards send decomposed Vietnamese that looks the same but is longer."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def units(text: str) -> int:
    """Length in UTF-16 code units (an emoji counts twice)."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def fits(text: str, limit: int) -> bool:
    return units(text) <= limit


# A sentence ends at . ! ? … (possibly followed by closing quotes/brackets) before whitespace —
# but not after a short capitalised abbreviation ("TP. Hồ Chí Minh", "Q. 1", "ThS. Lan"), where
# a break would separate a title from the name it belongs to.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_ABBREVIATION = re.compile(r"(?:^|[\s(])[A-ZĐ][A-Za-zĐđ]{0,3}\.$")
_CLAUSE_END = re.compile(r"[;:,](?=\s)")


def _last_break(window: str, floor: int) -> int:
    """Where to cut `window` (an index after the separator), best boundary first; -1 if none
    lies beyond `floor` (a part shorter than that would be uselessly short)."""
    for sep in ("\n\n", "\n"):
        at = window.rfind(sep)
        if at > floor:
            return at + len(sep)
    for pattern in (_SENTENCE_END, _CLAUSE_END):
        best = -1
        for match in pattern.finditer(window):
            end = match.end()
            if end <= floor:
                continue
            if pattern is _SENTENCE_END and _ABBREVIATION.search(window[:end]):
                continue
            best = end
        if best > 0:
            return best
    at = window.rfind(" ")
    return at + 1 if at > floor else -1


def split_text(text: str, limit: int) -> list[str]:
    """Split NFC `text` into parts of at most `limit` UTF-16 units, preferring paragraph, then
    line, then sentence, then clause, then word boundaries; a hard cut only inside a single
    word longer than the limit (never between a letter and its combining mark)."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    text = nfc(text).strip()
    parts: list[str] = []
    rest = text
    while not fits(rest, limit):
        window = rest[:limit]
        while units(window) > limit:  # astral characters count twice
            window = window[:-1]
        cut = _last_break(window, len(window) // 4)
        if cut <= 0:
            cut = len(window)
            while cut > 1 and unicodedata.combining(rest[cut]):
                cut -= 1
        head = rest[:cut].rstrip()
        if head:
            parts.append(head)
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


HINT_NUMBERED = "Bạn gõ số thứ tự hoặc tên lựa chọn nhé."


def numbered(text: str, choices: Sequence[Choice], hint: str = HINT_NUMBERED) -> str:
    """The choices as a numbered list under the text: what a platform without (enough) buttons
    shows. The engine accepts the number or the title in reply; `hint` says so."""
    lines = [text, ""] if text else []
    lines += [f"{i}. {nfc(choice.title)}" for i, choice in enumerate(choices, 1)]
    if hint:
        lines += ["", hint]
    return "\n".join(lines)


__all__ = ["HINT_NUMBERED", "fits", "nfc", "numbered", "split_text", "units"]
