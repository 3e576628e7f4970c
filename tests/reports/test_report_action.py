"""`action: report` in the flow language: an entry from the run's answers, then a fresh loop.

Driven through the real engine (tests/flows/conftest.py's Chat round-trips the session through
its stored JSON like Redis does)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.check import check
from flows.engine import Engine
from flows.events import CITIZEN_ID_HASH, EntryReported, FieldSaved, citizen_id_hash
from flows.schema import ActionStep
from tests.flows.conftest import Chat, build

KEY = b"action-test-key-0123456789"
IN_WAVE = datetime(2023, 5, 2, 3, tzinfo=UTC)
CCCD = "079123456789"

FLOWS = """
organisations:
  sc:
    name: Huyện đoàn SC
    channels: {webchat: {}}
    links:
      bc: bao_cao
      cb01: {flow: bao_cao, ref: cb01}
    children:
      x1: {name: Đoàn xã Một}
      x2: {name: Đoàn xã Hai}

campaigns:
  vneid:
    title: Hướng dẫn VNeID
    waves:
      - {name: Đợt 1, from: 2023-04-21, to: 2023-05-12}

flows:
  dang_ky:
    title: Đăng ký
    steps:
      - ask: Bạn đồng ý cho lưu thông tin chứ?
        expect: yes_no
        save: dong_y
      - ask: Họ tên của bạn?
        save: ho_ten
      - end: Xong.

  bao_cao:
    title: Báo cáo người dân
    campaign: vneid
    requires: dang_ky
    steps:
      - ask: Bạn báo cáo cho xã nào?
        expect: unit
        save: xa
      - ask: Tên người dân?
        save: ten_cong_dan
      - ask: Số CCCD?
        expect: cccd
        save: cccd_cong_dan
      - ask: Có tài khoản dịch vụ công chưa?
        expect: yes_no
        save: tai_khoan_dvc
      - id: ghi_nhan
        action: report
        report: cong_dan
        say: Đã ghi nhận {ten_cong_dan}.
      - id: tiep
        choose: Báo cáo tiếp?
        choices:
          - {title: Báo cáo tiếp, goto: ten_cong_dan}
          - {title: Xong, goto: het}
      - id: het
        end: Cảm ơn {ho_ten}.
"""


def _chat(*, key: bytes | None = KEY, now: datetime = IN_WAVE) -> Chat:
    return Chat(Engine(build(FLOWS), citizen_key=key), now=now, district="sc")


def _register_and_open(chat: Chat, ref: str = "bc") -> None:
    chat.start(ref)
    chat.say("có")
    chat.say("Lò Văn Cán")
    assert "xã nào" in chat.text


def _entries(chat: Chat) -> list[EntryReported]:
    return [e for t in chat.turns for e in t.events if isinstance(e, EntryReported)]


def test_each_round_is_one_entry_and_the_next_round_starts_fresh() -> None:
    chat = _chat()
    _register_and_open(chat)
    chat.say("xa mot")
    for name, cccd, dvc in (("Lường Thị Mai", CCCD, "có"), ("Quàng Văn Hùng", "0791 2345 6780",
                                                           "không")):
        chat.say(name)
        chat.say(cccd)
        chat.say(dvc)
        assert chat.texts[0] == f"Đã ghi nhận {name}."
        assert chat.buttons == ["Báo cáo tiếp", "Xong"]
        session = chat.session
        assert session is not None
        # the loop's answers are gone; what was asked once before the loop stays
        assert set(session.data) == {"xa"}
        if name.startswith("Lường"):
            chat.press("Báo cáo tiếp")
            assert chat.texts == ["Tên người dân?"]
    chat.press("Xong")
    assert chat.texts == ["Cảm ơn Lò Văn Cán."]
    first, second = _entries(chat)
    assert first == EntryReported(
        kind="cong_dan",
        flow="bao_cao",
        fields=(("xa", "x1"), ("ten_cong_dan", "Lường Thị Mai"),
                ("cccd_cong_dan", citizen_id_hash(KEY, CCCD)), ("tai_khoan_dvc", "có")),
        protected=("cccd_cong_dan",),
        campaign="vneid",
        wave="Đợt 1",
        ref=None,
    )
    assert second.fields == (("xa", "x1"), ("ten_cong_dan", "Quàng Văn Hùng"),
                             ("cccd_cong_dan", citizen_id_hash(KEY, "079123456780")),
                             ("tai_khoan_dvc", "không"))


def test_reported_answers_never_reach_the_reporters_profile() -> None:
    chat = _chat()
    _register_and_open(chat)
    for text in ("xa hai", "Lường Thị Mai", CCCD, "có"):
        chat.say(text)
    saved = [e.name for t in chat.turns for e in t.events if isinstance(e, FieldSaved)]
    assert saved == ["ho_ten"]  # the registration's only
    session = chat.session
    assert session is not None and session.profile == {"ho_ten": "Lò Văn Cán"}


def test_with_the_key_the_session_never_holds_the_digits() -> None:
    chat = _chat()
    _register_and_open(chat)
    chat.say("xa mot")
    chat.say("Lường Thị Mai")
    chat.say("0791 2345 6789")
    assert chat.stored is not None
    assert b"6789" not in chat.stored
    assert CITIZEN_ID_HASH.encode() in chat.stored
    chat.say("có")
    (entry,) = _entries(chat)
    assert dict(entry.fields)["cccd_cong_dan"] == citizen_id_hash(KEY, CCCD)


def test_without_the_key_the_digits_go_to_the_writer() -> None:
    chat = _chat(key=None)
    _register_and_open(chat)
    for text in ("xa mot", "Lường Thị Mai", "0791.2345.6789", "có"):
        chat.say(text)
    (entry,) = _entries(chat)
    assert dict(entry.fields)["cccd_cong_dan"] == CCCD
    assert entry.protected == ("cccd_cong_dan",)
    session = chat.session
    assert session is not None and "cccd_cong_dan" not in session.data  # forgotten at once


def test_the_referral_code_the_reporter_came_with_is_kept() -> None:
    chat = _chat()
    _register_and_open(chat, ref="cb01")
    for text in ("xa mot", "Lường Thị Mai", CCCD, "có"):
        chat.say(text)
    (entry,) = _entries(chat)
    assert entry.ref == "cb01"


def test_a_campaign_that_closed_meanwhile_records_nothing() -> None:
    chat = _chat(now=datetime(2023, 5, 12, 16, 50, tzinfo=UTC))  # 23:50 on the last day
    _register_and_open(chat)
    for text in ("xa mot", "Lường Thị Mai", CCCD):
        chat.say(text)
    chat.now = datetime(2023, 5, 12, 17, 10, tzinfo=UTC)  # 00:10 the next day
    chat.say("có")
    assert _entries(chat) == []
    assert "Hướng dẫn VNeID" in chat.text
    assert chat.session is None or chat.session.flow is None


def test_without_a_loop_every_answer_is_forgotten() -> None:
    bundle = build(FLOWS.replace("goto: ten_cong_dan", "goto: het"))
    step = bundle.flows["bao_cao"].by_id["ghi_nhan"]
    assert step.clears == ("xa", "ten_cong_dan", "cccd_cong_dan", "tai_khoan_dvc")
    looped = build(FLOWS).flows["bao_cao"]
    assert looped.by_id["ghi_nhan"].clears == ("ten_cong_dan", "cccd_cong_dan", "tai_khoan_dvc")
    assert looped.entry_fields == ("xa", "ten_cong_dan", "cccd_cong_dan", "tai_khoan_dvc")
    assert looped.protected == frozenset({"cccd_cong_dan"})
    assert looped.profile_fields == ()


def test_the_language_requires_a_kind_for_report() -> None:
    with pytest.raises(ValidationError, match="report"):
        ActionStep.model_validate({"action": "report"})
    assert ActionStep.model_validate({"action": "report", "report": "cong_dan"}).report == (
        "cong_dan")


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "flows.yaml"
    path.write_text(text, encoding="utf-8")
    return [f"{'lỗi' if p.is_error else 'cảnh báo'}: {p.message}" for p in check(path)]


def test_check_reports_misused_report_actions(tmp_path: Path) -> None:
    assert _problems(tmp_path, FLOWS) == []
    misplaced = FLOWS.replace(
        "      - id: het\n        end: Cảm ơn {ho_ten}.",
        "      - id: het\n        action: tag\n        tag: xong\n        report: cong_dan",
    )
    assert _problems(tmp_path, misplaced) == [
        "cảnh báo: khóa 'report' chỉ dùng với action: report (bước này là action: tag)"
    ]
    required = FLOWS.replace(
        "      - end: Xong.",
        "      - id: ghi\n        action: report\n        report: dang_ky",
    )
    assert _problems(tmp_path, required) == [
        "lỗi: kịch bản 'dang_ky' được requires nên không dùng được action: report"
    ]
    nothing = """
flows:
  bao_cao:
    title: Báo cáo
    steps:
      - id: ghi
        action: report
        report: trong
"""
    assert _problems(tmp_path, nothing) == [
        "cảnh báo: action: report không có câu trả lời nào để ghi nhận"
    ]
