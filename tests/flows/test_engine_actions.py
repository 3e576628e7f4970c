"""Actions, placeholders and buttons through `Engine.handle`."""

from __future__ import annotations

from flows.engine import Engine
from flows.events import (
    FieldSaved,
    FlowFinished,
    OrganisersNotified,
    ReferralRecorded,
    Tagged,
)
from tests.flows.conftest import DEPLOYMENT, Chat, build

ACTIONS = """
organisations:
  q1:
    name: Quận Đoàn 1
    links:
      gt: {flow: khao_sat, ref: CB042}
    children:
      ben-nghe: {name: Đoàn phường Bến Nghé}
flows:
  khao_sat:
    title: Khảo sát
    steps:
      - ask: Bạn bao nhiêu tuổi?
        expect: {number: {min: 14, max: 35}}
        save: tuoi
      - ask: Bạn sinh ngày nào?
        expect: date
        save: ngay_sinh
      - action: tag
        tag: khao-sat-2024
      - action: notify
        text: "{ho_ten_chua_co}Có người {tuoi} tuổi vừa khảo sát."
      - action: referral
        say: "Bạn {tuoi} tuổi, sinh ngày {ngay_sinh}{khong_co}."
      - action: goto
        flow: cam_on
  cam_on:
    steps:
      - end: Cảm ơn bạn!
"""


def test_tag_notify_referral_goto_and_placeholders() -> None:
    chat = Chat(Engine(build(ACTIONS)), district="q1")
    chat.start("gt")
    assert chat.events == (ReferralRecorded("CB042", "khao_sat"),)
    chat.say("99")
    assert "từ 14 đến 35" in chat.text
    chat.say("21")
    assert chat.events == (FieldSaved("tuoi", "21"),)
    chat.say("5/9/2003")
    assert chat.events == (
        FieldSaved("ngay_sinh", "2003-09-05"),
        Tagged("khao-sat-2024"),
        # An unknown placeholder renders empty at run time (`loa check` reports it).
        OrganisersNotified("Có người 21 tuổi vừa khảo sát."),
        ReferralRecorded("CB042", "khao_sat"),
        FlowFinished("khao_sat"),
        FlowFinished("cam_on"),
    )
    assert chat.texts == ["Bạn 21 tuổi, sinh ngày 05/09/2003.", "Cảm ơn bạn!"]


def test_yes_no_and_choice_buttons_carry_payloads() -> None:
    chat = Chat(Engine(build(DEPLOYMENT)))
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.press("Đồng ý")
    assert chat.texts == ["Họ và tên của bạn là?"]
    # The consent button pressed again is not an answer to the name question.
    chat.press("Đồng ý")
    assert chat.events == ()
    assert chat.texts == [
        "Nút bạn vừa bấm thuộc một câu hỏi trước. Mình đang hỏi:",
        "Họ và tên của bạn là?",
    ]
    chat.say("Nguyễn Văn An")
    assert chat.events == (FieldSaved("ho_ten", "Nguyễn Văn An"),)


def test_choice_ask_shows_its_options_and_accepts_a_digit() -> None:
    bundle = build(
        """
flows:
  f:
    steps:
      - ask: Bạn là?
        expect: {choice: [Đoàn viên, Thanh niên, Cán bộ]}
        save: vai_tro
      - end: "Chào {vai_tro}."
"""
    )
    chat = Chat(Engine(bundle))
    chat.start()
    assert chat.buttons == ["Đoàn viên", "Thanh niên", "Cán bộ"]
    chat.say("Học sinh")
    assert chat.buttons == ["Đoàn viên", "Thanh niên", "Cán bộ"]  # asked again with buttons
    chat.say("2")
    assert chat.events[0] == FieldSaved("vai_tro", "Thanh niên")
    assert chat.texts == ["Chào Thanh niên."]


def test_unit_suggestion_buttons_work_for_csv_codes() -> None:
    csv_units = {
        "tan-phu": [
            ("Mã-ĐV/11", "Chi đoàn Khu phố 11"),
            ("Mã-ĐV/12", "Chi đoàn Khu phố 12"),
        ]
    }
    chat = Chat(Engine(build(DEPLOYMENT, units=csv_units)))
    chat.start()
    chat.press("Đăng ký thông tin")
    chat.say("có")
    chat.say("Nguyễn Văn An")
    chat.say("khu pho")
    assert {"Chi đoàn Khu phố 11", "Chi đoàn Khu phố 12"} <= set(chat.buttons)
    for out in chat.last.outbound:
        for choice in out.choices:
            assert choice.payload.isascii() and len(choice.payload) <= 64
    chat.press("Chi đoàn Khu phố 12")
    assert chat.events == (FieldSaved("don_vi", "Mã-ĐV/12"),)
    chat.say("an@gmail.com")
    chat.say("0912345678")
    assert "Chi đoàn Khu phố 12" in chat.texts[0]


def test_session_on_idle_with_an_old_menu_button(engine: Engine) -> None:
    chat = Chat(engine)
    chat.start()
    chat.press("Gặp cán bộ")
    chat.system("resume")
    assert chat.session is None
    chat.press("Đăng ký thông tin")  # the menu message from before
    assert "Bạn đồng ý chứ?" in chat.text


def test_builtin_placeholders_and_literal_braces() -> None:
    bundle = build(
        """
organisations:
  bt:
    name: Tỉnh đoàn Bến Tre
campaigns:
  tnvn: {title: Ứng dụng Thanh niên Việt Nam, waves: [{name: Đợt 2, from: 2021-05-01,
         to: 2021-06-30}]}
flows:
  f:
    campaign: tnvn
    steps:
      - say: "{to_chuc} ({kenh}): {ten_chien_dich}, {dot} từ {tu_ngay} đến {den_ngay}."
      - end: "Gõ {{menu}} để quay lại."
"""
    )
    from datetime import UTC, datetime

    chat = Chat(Engine(bundle), district="bt", now=datetime(2021, 6, 1, tzinfo=UTC))
    chat.start()
    assert chat.texts == [
        "Tỉnh đoàn Bến Tre (telegram): Ứng dụng Thanh niên Việt Nam, Đợt 2 từ 01/05/2021 đến "
        "30/06/2021.",
        "Gõ {menu} để quay lại.",
    ]


def test_goto_menu_without_a_menu_flow_opens_the_district_menu() -> None:
    bundle = build(
        """
organisations:
  q1: {name: Quận Đoàn 1, menu: trang_chu}
flows:
  trang_chu:
    steps:
      - choose: Trang chủ
        choices: [{title: Hỏi đáp, goto: hoi_dap}, {title: Khác, goto: hoi_dap}]
  hoi_dap:
    steps:
      - ask: Bạn muốn nhận tin nhắn nhắc việc không?
        expect: yes_no
        save: nhan_tin
        when_no: {say: Vâng ạ.}
      - say: Mình sẽ nhắc bạn.
        goto: menu
"""
    )
    engine = Engine(bundle)
    yes = Chat(engine, district="q1")
    yes.start()
    yes.press("Hỏi đáp")
    yes.say("có")
    assert yes.texts == ["Mình sẽ nhắc bạn.", "Trang chủ"]
    no = Chat(engine, district="q1")
    no.start()
    no.press("Hỏi đáp")
    no.say("không")  # `when_no` without goto ends the flow after its say
    assert no.texts == ["Vâng ạ."]
    assert no.events == (FieldSaved("nhan_tin", "không"), FlowFinished("hoi_dap"))
