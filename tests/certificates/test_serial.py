"""Serial numbers: readable format, unique and unpredictable random parts, strict checking."""

from __future__ import annotations

import re

import pytest

from bots.certificates.serial import (
    ALPHABET,
    CHECK_LENGTH,
    Serial,
    campaign_code,
    is_valid_serial,
    new_serial,
    normalize_serial,
    parse_serial,
)


def test_format_carries_code_year_sequence_and_random_part() -> None:
    serial = new_serial("CDS", 2023, 123)
    assert re.fullmatch(rf"CDS-2023-000123-[{ALPHABET}]{{{CHECK_LENGTH}}}", serial)
    assert is_valid_serial(serial)
    assert parse_serial(serial) == Serial("CDS", 2023, 123, serial[-CHECK_LENGTH:])
    assert str(parse_serial(serial)) == serial


def test_large_sequences_use_more_digits() -> None:
    serial = new_serial("cds", 2024, 1_234_567)
    assert serial.startswith("CDS-2024-1234567-")
    assert is_valid_serial(serial)


def test_many_serials_are_unique_and_their_random_parts_vary() -> None:
    serials = [new_serial("CDS", 2023, 7) for _ in range(5000)]
    assert len(set(serials)) == len(serials)  # same sequence, still all different
    checks = "".join(s[-CHECK_LENGTH:] for s in serials)
    assert set(checks) == set(ALPHABET)  # every character of the alphabet turns up
    assert not set(checks) & set("ILOU")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "CDS-2023-000123",
        "CDS-2023-000123-K7Q4X",  # random part too short
        "CDS-2023-000123-K7Q4XMM",  # too long
        "cds-2023-000123-K7Q4XM",  # lower case
        "CDS-2023-000123-K7Q4XO",  # O is not in the alphabet
        "CDS-2023-123-K7Q4XM",  # sequence not padded
        "CDS-23-000123-K7Q4XM",
        "CDS-2023-000123-K7Q4XM ",
        "CDS-2023-000123-K7Q4XM\n",
        "CDS_2023_000123_K7Q4XM",
        "../../etc/passwd",
        "CDS-2023-000123-K7Q4XM' OR '1'='1",
        "C-2023-000123-K7Q4XM",  # code of one letter
        "CDS-2023-" + "1" * 40 + "-K7Q4XM",
        "X" * 10_000,
    ],
)
def test_malformed_serials_are_refused(bad: str) -> None:
    assert not is_valid_serial(bad)
    assert parse_serial(bad) is None


def test_non_strings_are_refused() -> None:
    assert not is_valid_serial(None)  # type: ignore[arg-type]
    assert not is_valid_serial(12345)  # type: ignore[arg-type]


def test_typed_serials_are_normalised() -> None:
    serial = "CDS-2023-000123-K7Q4XM"
    assert normalize_serial(" cds-2023-000123-k7q4xm ") == serial
    assert normalize_serial("CDS–2023–000123–K7Q4XM") == serial  # en dashes
    assert normalize_serial("CDS-2023-000123-K7Q4XM".replace("0", "O", 1)) is None  # not in check
    assert normalize_serial("CDS-2023-000123-1O2I3L") == "CDS-2023-000123-102131"
    assert normalize_serial("CDS-2023-000123") is None
    assert normalize_serial("x" * 500) is None


@pytest.mark.parametrize(
    ("code", "year", "sequence"),
    [
        ("", 2023, 1),
        ("C", 2023, 1),
        ("1CDS", 2023, 1),
        ("CD S", 2023, 1),
        ("CDS", 20, 1),
        ("CDS", 2023, -1),
        ("CDS", 2023, 10**9),
    ],
)
def test_new_serial_refuses_bad_parts(code: str, year: int, sequence: int) -> None:
    with pytest.raises(ValueError):
        new_serial(code, year, sequence)


def test_campaign_codes_from_ids() -> None:
    assert campaign_code("cong_dan_so") == "CDS"
    assert campaign_code("thanh-nien-viet-nam") == "TNVN"
    assert campaign_code("vneid") == "VNEID"
    assert campaign_code("Đợt 2 công dân số") == "D2CDS"
    assert is_valid_serial(new_serial(campaign_code("công_dân_số"), 2023, 1))
    with pytest.raises(ValueError):
        campaign_code("__")
