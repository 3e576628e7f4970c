"""Text normalisation and matching: what people type, compared without diacritics.

Everything here is pure and on the hot path of every inbound message, so the folding of short
strings is cached and matchers are built once (by the compiler) and reused.
"""

from __future__ import annotations

import difflib
import enum
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

# One translate table: drop the combining marks NFD splits off (Latin-script blocks: enough for
# Vietnamese and every Latin alphabet) and fold đ/Đ, which has no decomposition.
_FOLD_TABLE: dict[int, str | None] = {
    c: None
    for lo, hi in (
        (0x0300, 0x036F),
        (0x1AB0, 0x1AFF),
        (0x1DC0, 0x1DFF),
        (0x20D0, 0x20FF),
        (0xFE20, 0xFE2F),
    )
    for c in range(lo, hi + 1)
    if unicodedata.combining(chr(c))
}
_FOLD_TABLE.update({ord("đ"): "d", ord("Đ"): "d"})
_EDGE_PUNCT = "".join(
    sorted(set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…–—·•。，、！？：；（）【】"))
)


@lru_cache(maxsize=8192)
def fold(s: str) -> str:
    """Diacritics-free, case-folded, whitespace-collapsed form for comparisons.

    "ĐĂNG KÝ", "Đăng ký" and "dang ky" all fold to "dang ky". Punctuation inside the text is kept
    (e-mails, "0912.345.678"); punctuation at the ends is dropped ("Có!" → "co").
    """
    s = unicodedata.normalize("NFD", s).translate(_FOLD_TABLE).casefold()
    return " ".join(s.split()).strip(_EDGE_PUNCT).strip()


# -- choices --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChoiceMatcher:
    """Picks one of `count` choices from typed text: its number ("1", "2", …), its title or a
    synonym, folded. Built once per step."""

    keys: Mapping[str, int]  # folded title or synonym → 0-based index
    count: int

    def match(self, text: str) -> int | None:
        folded = fold(text) if len(text) <= 200 else ""
        if not folded:
            return None
        index = self.keys.get(folded)
        if index is not None:
            return index
        if folded.isdigit() and len(folded) <= 3:
            n = int(folded)
            if 1 <= n <= self.count:
                return n - 1
        return None


def choice_matcher(options: Sequence[Sequence[str]]) -> ChoiceMatcher:
    """A matcher over options, each given as its title followed by its synonyms.

    When two options share a folded key, the first one keeps it (list order is what the
    organiser sees)."""
    keys: dict[str, int] = {}
    for index, words in enumerate(options):
        for word in words:
            key = fold(word)
            if key and key not in keys:
                keys[key] = index
    return ChoiceMatcher(MappingProxyType(keys), len(options))


@lru_cache(maxsize=1024)
def _titles_matcher(titles: tuple[str, ...]) -> ChoiceMatcher:
    return choice_matcher([(t,) for t in titles])


def match_choice(text: str, titles: Sequence[str]) -> int | None:
    """The 0-based index of the title `text` picks (by number or folded title), else None."""
    return _titles_matcher(tuple(titles)).match(text)


# -- yes / no -------------------------------------------------------------------------------------

_YES = (
    "có",
    "co",
    "ừ",
    "u",
    "uk",
    "ok",
    "oke",
    "okay",
    "oki",
    "đồng ý",
    "dong y",
    "vâng",
    "yes",
    "y",
    "1",
    "dạ",
    "dạ có",
    "có ạ",
    "vâng ạ",
    "ừm",
    "uh",
    "uhm",
    "đúng",
    "đúng rồi",
    "đồng ý ạ",
    "tôi đồng ý",
    "em đồng ý",
    "mình đồng ý",
    "có đồng ý",
)
_NO = (
    "không",
    "khong",
    "ko",
    "k",
    "không đồng ý",
    "khong dong y",
    "no",
    "n",
    "2",
    "thôi",
    "kg",
    "khg",
    "hông",
    "không ạ",
    "dạ không",
    "không muốn",
    "từ chối",
    "tôi không đồng ý",
    "chưa",
    "thôi ạ",
)
YES_NO: Mapping[str, bool] = MappingProxyType(
    {**{fold(w): True for w in _YES}, **{fold(w): False for w in _NO}}
)


def match_yes_no(text: str) -> bool | None:
    """True for "có"/"ok"/"1"/…, False for "không"/"ko"/"2"/…, None when it is neither."""
    if len(text) > 40:
        return None
    return YES_NO.get(fold(text))


# -- global commands -------------------------------------------------------------------------------


class Command(enum.Enum):
    MENU = "menu"
    CANCEL = "cancel"
    HELP = "help"
    STATUS = "status"
    EDIT = "edit"
    DELETE = "delete"


_COMMAND_WORDS: dict[Command, tuple[str, ...]] = {
    Command.MENU: ("menu", "bắt đầu lại", "về menu", "màn hình chính", "restart"),
    Command.CANCEL: ("hủy", "huỷ", "thoát", "dừng lại", "cancel", "/cancel"),
    Command.HELP: ("trợ giúp", "giúp", "giúp tôi", "help", "/help", "hướng dẫn sử dụng"),
    Command.STATUS: ("kết quả", "tra cứu", "xem kết quả", "trạng thái", "/status"),
    Command.EDIT: ("sửa thông tin", "sửa đăng ký", "cập nhật thông tin", "/edit"),
    Command.DELETE: ("xóa dữ liệu của tôi", "xoá dữ liệu của tôi", "xóa dữ liệu", "/delete"),
}
COMMANDS: Mapping[str, Command] = MappingProxyType(
    {fold(word): cmd for cmd, words in _COMMAND_WORDS.items() for word in words}
)
_COMMAND_MAX = 32  # longer messages are never a command: skip folding them on the hot path


def match_command(text: str) -> Command | None:
    """The global command a whole message is, matched folded with synonyms ("?" is help)."""
    if len(text) > _COMMAND_MAX:
        return None
    if text.strip() == "?":
        return Command.HELP
    return COMMANDS.get(fold(text))


# -- units ----------------------------------------------------------------------------------------

# Words that say what kind of organisation a unit is, not which one: ignored when scoring so that
# "phuong hoa thanh" finds "Đoàn phường Hòa Thạnh". Only words that are never part of a place or
# school name on their own are listed ("thanh", "tan", "tran" are names).
GENERIC_WORDS = frozenset(
    fold(w)
    for w in (
        "đoàn",
        "đoàn tn",
        "tn",
        "tncs",
        "phường",
        "xã",
        "trường",
        "quận",
        "huyện",
        "chi",
        "chi đoàn",
        "liên",
        "khối",
        "cơ",
        "sở",
        "đơn",
        "vị",
        "p",
        "q",
        "tp",
        "tx",
        "ubnd",
        "ban",
        "của",
        "và",
        "thuộc",
    )
)


@dataclass(frozen=True, slots=True)
class UnitMatch:
    """The result of matching typed text against a district's units."""

    unit: tuple[str, str] | None  # (slug, name) when exactly one unit fits
    suggestions: tuple[tuple[str, str], ...] = ()  # the closest ones (≤ 3) otherwise

    @property
    def ok(self) -> bool:
        return self.unit is not None


def _core(folded: str) -> tuple[str, ...]:
    return tuple(t for t in folded.replace(",", " ").split() if t not in GENERIC_WORDS)


@lru_cache(maxsize=64)
def _unit_index(
    units: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str, str, tuple[str, ...]], ...]:
    # (slug, name, folded name, core tokens) — computed once per unit list.
    return tuple((slug, name, fold(name), _core(fold(name))) for slug, name in units)


def match_unit(text: str, units: Iterable[tuple[str, str]]) -> UnitMatch:
    """Find the unit someone typed, loosely.

    Exact (folded name or slug) wins; then a unique unit whose distinctive words equal or contain
    the typed ones ("phuong hoa thanh" → "Đoàn phường Hòa Thạnh"); otherwise the three closest
    units as suggestions (ambiguous or loose input)."""
    index = _unit_index(tuple(units))
    query = fold(text)
    if not query or not index:
        return UnitMatch(None)
    for slug, name, folded, _ in index:
        if query in (folded, slug):
            return UnitMatch((slug, name))
    q_core = _core(query)
    if not q_core:
        return UnitMatch(None, _closest(query, q_core, index))
    equal = [(slug, name) for slug, name, _, core in index if core == q_core]
    if len(equal) == 1:
        return UnitMatch(equal[0])
    if len(equal) > 1:
        return UnitMatch(None, tuple(equal[:3]))
    wanted = set(q_core)
    containing = [(slug, name) for slug, name, _, core in index if wanted <= set(core)]
    if len(containing) == 1:
        return UnitMatch(containing[0])
    return UnitMatch(None, _closest(query, q_core, index))


def _closest(
    query: str,
    q_core: tuple[str, ...],
    index: tuple[tuple[str, str, str, tuple[str, ...]], ...],
) -> tuple[tuple[str, str], ...]:
    core_text = " ".join(q_core) or query
    wanted = set(q_core)
    scored: list[tuple[float, int, tuple[str, str]]] = []
    for position, (slug, name, folded, core) in enumerate(index):
        ratio = difflib.SequenceMatcher(None, core_text, " ".join(core) or folded).ratio()
        overlap = len(wanted & set(core)) / max(len(wanted), 1)
        score = ratio + overlap
        if score >= 0.5:
            scored.append((-score, position, (slug, name)))
    scored.sort()
    return tuple(unit for _, _, unit in scored[:3])


__all__ = [
    "COMMANDS",
    "GENERIC_WORDS",
    "YES_NO",
    "ChoiceMatcher",
    "Command",
    "UnitMatch",
    "choice_matcher",
    "fold",
    "match_choice",
    "match_command",
    "match_unit",
    "match_yes_no",
]
