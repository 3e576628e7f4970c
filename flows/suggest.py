"""Names compared the way organisers type them: without diacritics, with close-match
suggestions ("có phải ý bạn là ...?") and slug suggestions for ids written in Vietnamese."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable


def fold(text: str) -> str:
    """Lower-case text without Vietnamese diacritics, single-spaced (for matching names)."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    bare = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return " ".join(bare.lower().split())


def slugify(text: str, sep: str = "_") -> str:
    """A suggestion for an id written with diacritics or spaces: 'Họ tên' -> 'ho_ten'."""
    return re.sub(r"[^a-z0-9]+", sep, fold(text)).strip(sep)[:64] or "ma"


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like `name` (compared without diacritics), if any is close."""
    options = {fold(c): c for c in candidates}
    found = difflib.get_close_matches(fold(name), list(options), n=1, cutoff=0.6)
    return options[found[0]] if found else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    match = closest(name, candidates)
    return f"có phải ý bạn là '{match}'?" if match else ""


__all__ = ["closest", "did_you_mean", "fold", "slugify"]
