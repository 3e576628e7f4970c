"""Step ids and edges (flows/steps.py): the one definition the checker, compiler and diagrams
share."""

from __future__ import annotations

from flows.schema import Flow
from flows.steps import MENU, EdgeKind, edges, step_id, step_ids, successors, waits


def flow(*steps: dict[str, object]) -> Flow:
    return Flow.model_validate({"steps": list(steps)})


def test_ids_prefer_explicit_then_save_then_evidence_then_content() -> None:
    f = flow(
        {"id": "chao", "say": "Chào"},
        {"ask": "Tên?", "save": "ho_ten"},
        {"evidence": "vneid", "ask": "Ảnh?", "expect": "image"},
        {"say": "Cảm ơn"},
        {"end": None},
    )
    ids = step_ids(f)
    assert ids[:3] == ["chao", "ho_ten", "vneid"]
    assert ids[3].startswith("say_") and len(ids[3]) == len("say_") + 6
    assert ids[4].startswith("end_")


def test_content_ids_are_stable_and_repeats_are_numbered() -> None:
    a = flow({"say": "Cảm ơn"}, {"ask": "Tên?", "save": "ho_ten"}, {"say": "Cảm ơn"})
    b = flow({"ask": "Tuổi?", "save": "tuoi"}, {"say": "Cảm ơn"})
    ids = step_ids(a)
    assert ids[2] == f"{ids[0]}_2"
    # Editing or inserting other steps never changes a step's id.
    assert step_ids(b)[1] == ids[0]
    assert step_id(flow({"say": "Cảm ơn!"}).steps[0]) != ids[0]


def test_successors_follow_list_order_gotos_choices_branches_and_when_no() -> None:
    f = flow(
        {
            "ask": "Đồng ý?",
            "expect": "yes_no",
            "save": "dong_y",
            "when_no": {"say": "Không sao", "goto": MENU},
        },
        {
            "id": "hoi",
            "choose": "Máy gì?",
            "choices": [{"title": "Android", "goto": "android"}, {"title": "Khác"}],
        },
        {
            "branch": [{"if": {"field": "dong_y", "equals": True}, "goto": "android"}],
            "else": "het",
            "id": "re",
        },
        {"id": "android", "say": "CH Play", "goto": "het"},
        {"id": "sang_vneid", "action": "goto", "flow": "huong_dan_vneid"},
        {"id": "het", "end": "Xong"},
    )
    assert successors(f) == {
        "dong_y": ["hoi", MENU],
        "hoi": ["android", "re"],
        "re": ["android", "het"],
        "android": ["het"],
        "sang_vneid": ["huong_dan_vneid"],
        "het": [],
    }
    kinds = {(e.source, e.target): e.kind for e in edges(f)}
    assert kinds[("dong_y", MENU)] is EdgeKind.NO
    assert kinds[("hoi", "re")] is EdgeKind.CHOICE
    assert kinds[("re", "het")] is EdgeKind.ELSE
    assert kinds[("sang_vneid", "huong_dan_vneid")] is EdgeKind.FLOW
    # Where each written target is, for pointing at it.
    vias = {(e.source, e.target): e.via for e in edges(f)}
    assert vias[("hoi", "android")] == ("choices", 0, "goto")
    assert vias[("hoi", "re")] == ()  # implied: the next step


def test_which_steps_wait_for_the_person() -> None:
    f = flow(
        {"say": "Chào"},
        {"say": "Chọn", "choices": [{"title": "A"}]},
        {"ask": "Tên?"},
        {"branch": [{"if": {"field": "x", "exists": True}, "goto": "y"}]},
        {"action": "handover"},
        {"action": "notify", "text": "Có người cần giúp"},
    )
    assert [waits(s) for s in f.steps] == [False, True, True, False, True, False]
