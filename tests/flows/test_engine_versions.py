"""Compiled flows, versions and the stored session."""

from __future__ import annotations

import pytest

from flows.compiler import (
    END,
    START,
    StepKind,
    Target,
    TargetKind,
    compile_flow,
)
from flows.engine import Engine
from flows.events import FieldSaved
from flows.schema import Bundle
from flows.session import Mode, Session, SessionFormatError, dumps, loads
from flows.steps import step_ids
from tests.flows.conftest import DEPLOYMENT, Chat, archive, build

V1 = """
flows:
  menu:
    steps:
      - choose: Chọn
        choices: [{title: Đăng ký, goto: form}, {title: Khác, goto: form}]
  form:
    title: Đăng ký
    steps:
      - ask: Họ tên?
        save: ho_ten
      - ask: Năm sinh?
        expect: {number: {min: 1950, max: 2015}}
        save: nam_sinh
      - end: "Xong, {ho_ten}!"
"""
# The organiser reworded the second question and added one: a new version of `form`.
V2 = V1.replace("Năm sinh?", "Bạn sinh năm nào?").replace(
    "      - end:", "      - ask: Quê quán?\n        save: que\n      - end:"
)


def test_editing_one_flow_changes_only_its_version() -> None:
    old, new = build(V1), build(V2)
    assert old.flows["form"].version != new.flows["form"].version
    assert old.flows["menu"].version == new.flows["menu"].version


def test_a_session_stays_on_its_version_after_an_edit() -> None:
    old = build(V1)
    chat = Chat(Engine(old))
    chat.start()
    chat.press("Đăng ký")
    chat.say("Lê Văn Cường")
    assert chat.texts == ["Năm sinh?"]
    new = build(V2)
    chat.engine = Engine(new, archive=archive(old))
    chat.say("2001")
    assert chat.events[0] == FieldSaved("nam_sinh", "2001")
    assert chat.texts == ["Xong, Lê Văn Cường!"]  # the old version's next step, not "Quê quán?"
    # A new run starts on the current version.
    chat.start()
    chat.press("Đăng ký")
    session = chat.session
    assert session is not None and session.version == new.flows["form"].version


def test_a_session_whose_version_vanished_restarts_with_a_notice() -> None:
    old = build(V1)
    chat = Chat(Engine(old))
    chat.start()
    chat.press("Đăng ký")
    chat.say("Lê Văn Cường")
    chat.engine = Engine(build(V2))  # no archive: the old version is gone
    chat.say("2001")
    assert chat.texts == [
        "Nội dung “Đăng ký” vừa được Ban Tổ chức cập nhật, mình xin phép hỏi lại từ đầu phần này "
        "nhé.",
        "Họ tên?",
    ]
    assert chat.events == ()


def test_a_session_whose_flow_was_removed_goes_to_the_menu() -> None:
    chat = Chat(Engine(build(V1)))
    chat.start()
    chat.press("Đăng ký")
    chat.engine = Engine(build(V1.replace("goto: form}", "goto: menu}").split("  form:")[0]))
    chat.say("Lê Văn Cường")
    assert chat.texts == [
        "Phần bạn đang làm không còn nữa. Mình đưa bạn về màn hình chính nhé.",
        "Chọn",
    ]


def test_a_corrupt_step_in_the_session_restarts_the_flow() -> None:
    bundle = build(V1)
    engine = Engine(bundle)
    chat = Chat(engine)
    broken = Session(flow="form", version=bundle.flows["form"].version, state="khong_co")
    chat.stored = dumps(broken)
    chat.say("xin chào")
    assert chat.texts[-1] == "Họ tên?"
    assert "cập nhật" in chat.texts[0]


def test_step_ids_are_explicit_save_evidence_or_derived_and_unique() -> None:
    bundle = Bundle.model_validate(
        {
            "flows": {
                "f": {
                    "steps": [
                        {"say": "Chào"},
                        {"id": "hoi", "ask": "Tên?", "save": "ten"},
                        {"ask": "Tên lại?", "save": "ten"},
                        {"evidence": "anh", "ask": "Ảnh?", "expect": "image"},
                        {"say": "Chào"},
                        {"end": None},
                    ]
                }
            }
        }
    )
    flow = compile_flow("f", bundle.flows["f"])
    ids = [s.id for s in flow.steps]
    assert ids[1:4] == ["hoi", "ten", "anh"]
    assert ids[0].startswith("say_") and len(ids[0]) == len("say_") + 6
    assert ids[4] == ids[0] + "_2"  # same content, same derived id: a deterministic suffix
    assert ids[5].startswith("end_")
    assert len(set(ids)) == len(ids)
    # Deterministic across compilations, and the ids the checker and diagrams show.
    assert [s.id for s in compile_flow("g", bundle.flows["f"]).steps] == ids
    assert step_ids(bundle.flows["f"]) == ids


def test_compiled_flow_machine_is_model_less_and_flat() -> None:
    bundle = build(DEPLOYMENT)
    flow = bundle.flows["dang_ky"]
    machine = flow.machine
    assert machine.models == []
    assert not any(name.startswith("to_") for name in machine.events)
    assert {START, END, ">menu", ">cong_dan_so"} <= set(machine.states)
    assert set(flow.by_id) <= set(machine.states)
    # Compiled once: the same content gives the very same compiled flow (cache by id, version).
    assert compile_flow("dang_ky", _flow(DEPLOYMENT, "dang_ky")) is flow


def _flow(text: str, flow_id: str):  # type: ignore[no-untyped-def]
    import yaml

    return Bundle.model_validate(yaml.safe_load(text)).flows[flow_id]


def test_edges_saves_and_kinds_for_the_checker() -> None:
    bundle = build(DEPLOYMENT)
    flow = bundle.flows["dang_ky"]
    assert [s.kind for s in flow.steps] == [StepKind.ASK] * 5 + [StepKind.SAY]
    edges = flow.edges()
    assert (edges[0].source, edges[0].target) == ("dong_y", Target(TargetKind.STEP, "ho_ten"))
    assert any(e.source == "dong_y" and e.target == Target(TargetKind.FLOW, "menu") for e in edges)
    last = [e for e in edges if e.source == flow.steps[-1].id]
    assert [(e.target, e.label) for e in last] == [
        (Target(TargetKind.FLOW, "cong_dan_so"), "Thực hiện thôi nào")
    ]
    assert flow.saves == {"dong_y", "ho_ten", "don_vi", "email", "so_dien_thoai"}
    assert flow.profile_fields == ("ho_ten", "don_vi", "email", "so_dien_thoai")
    assert flow.consent_step == "dong_y"
    assert bundle.flows["cong_dan_so"].evidence == ("vneid", "dich_vu_cong")
    assert bundle.registration == "dang_ky" and bundle.required == {"dang_ky"}


def test_organisation_tree_compiles_to_districts() -> None:
    bundle = build(DEPLOYMENT, units={"tan-phu": [("p-11", "Đoàn phường 11")]})
    assert set(bundle.districts) == {"tp-hcm", "tan-phu"}
    tan_phu = bundle.districts["tan-phu"]
    assert ("hoa-thanh", "Đoàn phường Hòa Thạnh") in tan_phu.units
    assert ("p-11", "Đoàn phường 11") in tan_phu.units
    assert tan_phu.links["cb001"].flow == "cong_dan_so" and tan_phu.links["cb001"].code == "CB001"
    assert tan_phu.links["huyhieuso"].code is None
    assert tan_phu.menu == "menu"
    # The top-level node (the embedded webchat's district) sees every descendant unit.
    assert ("hoa-thanh", "Đoàn phường Hòa Thạnh") in bundle.districts["tp-hcm"].units
    assert bundle.district("khong-co").slug == "tp-hcm"


def test_session_roundtrip_is_compact_and_versioned() -> None:
    session = Session(
        state="email",
        flow="dang_ky",
        version="0123456789ab",
        data={"ho_ten": "Nguyễn Văn An", "don_vi": "hoa-thanh"},
        profile={"ho_ten": "Nguyễn Văn An"},
        retries=1,
        ref="CB001",
        consent=True,
        done=["dang_ky"],
        subs={"cong_dan_so": "Đợt 1"},
        paused=True,
        mode=Mode.EDIT,
        stack=["cong_dan_so"],
    )
    raw = dumps(session)
    assert raw.startswith(b'{"v":1')
    assert loads(raw) == session
    assert dumps(Session()) == b'{"v":1}'
    assert loads(b'{"v":1}').is_blank()


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"v":99}', b'{"v":1,"m":"?"}', b'{"v":1,"s":5}'])
def test_unreadable_sessions_raise_a_format_error(raw: bytes) -> None:
    with pytest.raises(SessionFormatError):
        loads(raw)
