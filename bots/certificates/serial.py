"""Certificate serial numbers: human-friendly, and not guessable from one another.

A serial reads `CDS-2023-000123-K7Q4XM`: the campaign's code, the year, the certificate's
sequence number within the campaign (zero-padded to six digits, more when needed) and a random
part of six Crockford base-32 characters drawn with `secrets` (30 bits). The public verify page
shows a holder's name and unit, so a serial must not be reachable by counting: knowing one's own
serial, or guessing the sequence, still leaves a billion possibilities for the random part.

The random part uses Crockford's alphabet (no I, L, O, U) so that a serial read aloud or typed from
paper survives; `normalize_serial` maps the look-alikes a person types (O→0, I/L→1) back.
`is_valid_serial` is the strict format check the verify route runs before touching the database.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass

# Crockford base 32: digits and letters without I, L, O, U.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK_LENGTH = 6
SEQUENCE_DIGITS = 6  # minimum width; larger sequences simply use more digits
MAX_SEQUENCE = 999_999_999
MAX_LENGTH = 40  # longer input is refused before any regular expression runs

_CODE = re.compile(r"[A-Z][A-Z0-9]{1,9}")
_SERIAL = re.compile(
    rf"(?P<code>[A-Z][A-Z0-9]{{1,9}})-(?P<year>(?:19|20|21)\d\d)-(?P<sequence>\d{{6,9}})-"
    rf"(?P<check>[{ALPHABET}]{{{CHECK_LENGTH}}})"
)
# What people type for a Crockford character (Crockford's own decoding rules).
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


@dataclass(frozen=True, slots=True)
class Serial:
    """A parsed serial."""

    campaign_code: str
    year: int
    sequence: int
    check: str

    def __str__(self) -> str:
        return f"{self.campaign_code}-{self.year}-{self.sequence:0{SEQUENCE_DIGITS}d}-{self.check}"


def campaign_code(slug: str) -> str:
    """A short code for a campaign id: the initials of its words ("cong_dan_so" → "CDS"), or the
    first letters of a one-word id ("vneid" → "VNEID"). Diacritics are dropped."""
    plain = _ascii(slug).upper()
    words = [w for w in re.split(r"[^A-Z0-9]+", plain) if w]
    if not words:
        raise ValueError(f"campaign id {slug!r} has no letters for a code")
    code = "".join(w[0] for w in words) if len(words) > 1 else words[0]
    if code[0].isdigit():
        code = "C" + code
    code = code[:10]
    if len(code) < 2:
        code = (code + words[0][1:] + "X")[:2]
    return code


def new_serial(campaign_code: str, year: int, sequence: int) -> str:
    """A new serial for the `sequence`-th certificate of a campaign in `year`. The random part
    makes two calls with the same arguments differ; uniqueness in the database is still the
    caller's (a unique index on the serial column), as with any random identifier."""
    code = campaign_code.strip().upper()
    if not _CODE.fullmatch(code):
        raise ValueError(
            f"campaign code {campaign_code!r}: 2–10 letters or digits, starting with a letter"
        )
    if not 1900 <= year <= 2199:
        raise ValueError(f"year {year} out of range")
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence {sequence} out of range 0–{MAX_SEQUENCE}")
    check = "".join(secrets.choice(ALPHABET) for _ in range(CHECK_LENGTH))
    return str(Serial(code, year, sequence, check))


def is_valid_serial(serial: str) -> bool:
    """Whether `serial` has exactly the format `new_serial` produces (upper case, no spaces)."""
    return (
        isinstance(serial, str)
        and len(serial) <= MAX_LENGTH
        and _SERIAL.fullmatch(serial) is not None
    )


def parse_serial(serial: str) -> Serial | None:
    """The parts of a well-formed serial, or None."""
    if not is_valid_serial(serial):
        return None
    match = _SERIAL.fullmatch(serial)
    assert match is not None
    return Serial(match["code"], int(match["year"]), int(match["sequence"]), match["check"])


def normalize_serial(text: str) -> str | None:
    """A serial as a person may type it (lower case, spaces, O for 0, I or L for 1 in the random
    part, en dashes) in its canonical form, or None when it cannot be one."""
    if not isinstance(text, str) or len(text) > 2 * MAX_LENGTH:
        return None
    cleaned = unicodedata.normalize("NFKC", text).strip().upper()
    cleaned = re.sub(r"[\s]+", "", cleaned)
    cleaned = re.sub(r"[‐-―−_]", "-", cleaned)
    parts = cleaned.split("-")
    if len(parts) != 4:
        return None
    parts[3] = parts[3].translate(_LOOKALIKES)
    candidate = "-".join(parts)
    return candidate if is_valid_serial(candidate) else None


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


__all__ = [
    "ALPHABET",
    "CHECK_LENGTH",
    "Serial",
    "campaign_code",
    "is_valid_serial",
    "new_serial",
    "normalize_serial",
    "parse_serial",
]
