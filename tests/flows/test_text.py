from __future__ import annotations

import pytest

from flows.text import (
    Command,
    choice_matcher,
    fold,
    match_choice,
    match_command,
    match_unit,
    match_yes_no,
)

UNITS = [
    ("hoa-thanh", "Đoàn phường Hòa Thạnh"),
    ("phu-thanh", "Đoàn phường Phú Thạnh"),
    ("tan-thanh", "Đoàn phường Tân Thành"),
    ("thpt-tan-phu", "Trường THPT Tân Phú"),
    ("tan-phu-ward", "Đoàn phường Tân Phú"),
    ("hiep-tan", "Đoàn phường Hiệp Tân"),
]


@pytest.mark.parametrize("text", ["ĐĂNG KÝ", "dang ky", "Đăng ký", "  đăng   KÝ!  ", "«Đăng ký»"])
def test_fold_ignores_diacritics_case_spacing_and_edge_punctuation(text: str) -> None:
    assert fold(text) == "dang ky"


def test_fold_maps_d_stroke_and_keeps_inner_punctuation() -> None:
    assert fold("Đoàn ĐỘI") == "doan doi"
    assert fold("an.nguyen@gmail.com") == "an.nguyen@gmail.com"
    # Decomposed input (NFD from some keyboards) folds like composed input.
    assert fold("Hoa\u0300 Tha\u0323nh") == fold("Hòa Thạnh") == "hoa thanh"


def test_choice_by_number_title_or_synonym() -> None:
    matcher = choice_matcher([("Đăng ký thông tin",), ("Công dân số", "cds", "thu thach")])
    assert matcher.match("2") == 1
    assert matcher.match("1.") == 0
    assert matcher.match("dang ky thong tin") == 0
    assert matcher.match("CDS") == 1
    assert matcher.match("Thử thách") == 1
    assert matcher.match("3") is None
    assert matcher.match("0") is None
    assert matcher.match("something else") is None
    assert match_choice("phong ky thuat", ["Phòng Hành chính – Nhân sự", "Phòng Kỹ thuật"]) == 1


@pytest.mark.parametrize(
    "text",
    [
        "có",
        "co",
        "Có!",
        "ừ",
        "u",
        "uk",
        "ok",
        "OK",
        "oke",
        "đồng ý",
        "dong y",
        "vâng",
        "yes",
        "y",
        "1",
    ],
)
def test_yes_synonyms(text: str) -> None:
    assert match_yes_no(text) is True


@pytest.mark.parametrize(
    "text",
    ["không", "khong", "ko", "k", "không đồng ý", "Không đồng ý", "no", "n", "2", "thôi"],
)
def test_no_synonyms(text: str) -> None:
    assert match_yes_no(text) is False


@pytest.mark.parametrize("text", ["có lẽ", "maybe", "3", "", "không biết nữa"])
def test_neither_yes_nor_no(text: str) -> None:
    assert match_yes_no(text) is None


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("menu", Command.MENU),
        ("MENU", Command.MENU),
        ("bắt đầu lại", Command.MENU),
        ("bat dau lai", Command.MENU),
        ("hủy", Command.CANCEL),
        ("huy", Command.CANCEL),
        ("thoát", Command.CANCEL),
        ("trợ giúp", Command.HELP),
        ("giúp", Command.HELP),
        ("help", Command.HELP),
        ("?", Command.HELP),
        ("kết quả", Command.STATUS),
        ("ket qua", Command.STATUS),
        ("tra cứu", Command.STATUS),
        ("sửa thông tin", Command.EDIT),
        ("sua thong tin", Command.EDIT),
        ("xóa dữ liệu của tôi", Command.DELETE),
        ("xoa du lieu cua toi", Command.DELETE),
    ],
)
def test_global_commands(text: str, command: Command) -> None:
    assert match_command(text) is command


@pytest.mark.parametrize(
    "text", ["menu cho mình với", "tôi muốn hủy đăng ký", "Nguyễn Văn Menu", ""]
)
def test_commands_match_whole_messages_only(text: str) -> None:
    assert match_command(text) is None


def test_unit_found_by_loose_words() -> None:
    found = match_unit("phuong hoa thanh", UNITS)
    assert found.unit == ("hoa-thanh", "Đoàn phường Hòa Thạnh")
    assert match_unit("Hòa Thạnh", UNITS).unit == ("hoa-thanh", "Đoàn phường Hòa Thạnh")
    assert match_unit("hiep tan", UNITS).unit == ("hiep-tan", "Đoàn phường Hiệp Tân")


def test_unit_exact_name_wins_over_a_similar_one() -> None:
    # "tan phu" fits the ward and the school; the exact full name picks one.
    assert match_unit("Đoàn phường Tân Phú", UNITS).unit == ("tan-phu-ward", "Đoàn phường Tân Phú")
    assert match_unit("truong thpt tan phu", UNITS).unit == ("thpt-tan-phu", "Trường THPT Tân Phú")


def test_ambiguous_unit_suggests_the_closest_three() -> None:
    found = match_unit("thanh", UNITS)
    assert found.unit is None
    assert len(found.suggestions) == 3
    slugs = {slug for slug, _ in found.suggestions}
    assert slugs == {"hoa-thanh", "phu-thanh", "tan-thanh"}


def test_misspelt_unit_suggests_the_closest() -> None:
    found = match_unit("phuong hoa thnah", UNITS)
    assert found.unit is None
    assert found.suggestions[0] == ("hoa-thanh", "Đoàn phường Hòa Thạnh")
    assert len(found.suggestions) <= 3


def test_unrelated_text_finds_no_unit() -> None:
    found = match_unit("xyz qwerty", UNITS)
    assert found.unit is None
    assert found.suggestions == ()


def test_dung_without_accents_is_yes_not_cancel() -> None:
    # "đúng" folds to "dung", which is also "dừng" without accents: answering "đúng" to a
    # yes/no question must never cancel the conversation.
    for typed in ("đúng", "dung", "Đúng", "DUNG"):
        assert match_command(typed) is None
        assert match_yes_no(typed) is True
    assert match_command("dừng lại") is Command.CANCEL


def test_no_command_word_collides_with_a_yes_no_answer() -> None:
    from flows.text import COMMANDS, YES_NO

    assert not set(COMMANDS) & set(YES_NO)
