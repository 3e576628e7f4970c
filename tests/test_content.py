"""The shipped campaign content: flows.yaml, its sample images, the Tân Phú units CSV.

These tests read the real files in the repository. They check what the language cannot:
consent before personal data, the four criteria in the 2023 chatbot's order, an open challenge
on the browser's first district, platform limits on button titles and texts, and NFC text.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import importlib.util
import io
import re
import unicodedata
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, ImageChops

from flows.compiler import compile_bundle
from flows.loader import load
from flows.placeholders import BUILTIN_FIELDS
from flows.schema import (
    ActionKind,
    ActionStep,
    AskStep,
    Bundle,
    ChooseStep,
    EvidenceStep,
    ExpectKind,
    Flow,
    SayStep,
    step_kind,
)
from flows.text import Command, fold, match_command
from tests.required import missing

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows.yaml"
UNITS = ROOT / "data" / "tan-phu-units.csv"
WARDS = (
    "Hiệp Tân", "Hòa Thạnh", "Phú Thạnh", "Phú Thọ Hòa", "Phú Trung", "Sơn Kỳ", "Tân Quý",
    "Tân Sơn Nhì", "Tân Thành", "Tân Thới Hòa", "Tây Thạnh",
)
CRITERIA = ("vneid", "thanh_nien_vn", "thanh_toan", "dich_vu_cong")
# Messenger: quick-reply and button titles are cut after 20 characters, a button template's
# text after 640; every platform Loa serves takes at least 2000 characters of plain text.
BUTTON_TITLE_MAX = 20
BUTTON_TEXT_MAX = 640
TEXT_MAX = 2000
PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(FLOWS.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def bundle(raw: dict[str, Any]) -> Bundle:
    return Bundle.model_validate(raw)


@pytest.fixture(scope="module")
def districts() -> list[Any]:
    """The districts the engine serves, in file order (the browser chat opens the first)."""
    loaded = load(FLOWS)
    assert loaded.bundle is not None, [str(p) for p in loaded.problems]
    return list(compile_bundle(loaded.bundle, loaded.base_dir).districts.values())


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _texts(step: Any) -> list[str]:
    """What a person reads from a step."""
    out = [getattr(step, kind) for kind in ("say", "ask", "choose", "end", "retry")
           if isinstance(getattr(step, kind, None), str)]
    when_no = getattr(step, "when_no", None)
    if when_no is not None and when_no.say:
        out.append(when_no.say)
    return out


def _open_today(bundle: Bundle, campaign: str) -> bool:
    today = date.today()
    return any(w.from_ <= today <= w.to for w in bundle.campaigns[campaign].waves)


# --------------------------------------------------------------------------- the language


def test_flows_yaml_validates_against_the_schema(bundle: Bundle) -> None:
    assert {"dang_ky", "cong_dan_so", "huong_dan_vneid", "hoi_dap"} <= set(bundle.flows)
    assert {"cong_dan_so", "cong_dan_so_demo"} <= set(bundle.campaigns)


def test_flows_yaml_loads_without_problems() -> None:
    loaded = load(FLOWS)
    assert [str(p) for p in loaded.problems] == []
    assert loaded.bundle is not None
    # the CSV units were folded into the tree
    tan_phu = loaded.bundle.organisations["tp-hcm"].children["tan-phu"]
    assert "hoa-thanh" in tan_phu.children


def test_loa_check_passes() -> None:
    check = importlib.import_module("flows.check")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = check.main(argparse.Namespace(files=[str(FLOWS)]))
    assert code == 0, out.getvalue() + err.getvalue()
    # not even a warning: the shipped file is the example organisers copy
    assert [str(p) for p in check.check(FLOWS)] == []


def test_every_text_is_nfc(raw: dict[str, Any]) -> None:
    bad = [s for s in _strings(raw) if unicodedata.normalize("NFC", s) != s]
    assert bad == []
    for path in (FLOWS, UNITS):
        text = path.read_text(encoding="utf-8")
        assert unicodedata.normalize("NFC", text) == text, path


def test_no_flow_is_named_menu(bundle: Bundle, districts: list[Any]) -> None:
    # Shared flows say `goto: menu` to mean "this district's menu"; a flow called `menu`
    # would capture that and send every district to one menu.
    assert "menu" not in bundle.flows
    for district in districts:
        assert district.menu in bundle.flows, district.slug


# --------------------------------------------------------------------------- organisations


def test_units_csv_has_the_columns_and_the_eleven_wards() -> None:
    with UNITS.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["mã", "tên đơn vị", "khu vực", "số đoàn viên", "chỉ tiêu"]
        rows = list(reader)
    names = {row["tên đơn vị"] for row in rows}
    for ward in WARDS:
        assert f"Đoàn phường {ward}" in names
    assert len({row["mã"] for row in rows}) == len(rows)
    areas = {row["khu vực"] for row in rows}
    assert {"Khối phường", "Khối trường học"} <= areas
    for row in rows:
        members = int(row["số đoàn viên"])
        assert 80 <= members <= 600, row
        quota = row["chỉ tiêu"]
        if quota.endswith("%"):
            assert 0 < float(quota[:-1]) <= 100, row
        else:
            assert 0 < int(quota) <= members, row


def test_districts_with_their_menus_units_and_links(
    bundle: Bundle, districts: list[Any]
) -> None:
    by_slug = {d.slug: d for d in districts}
    # the browser opens the first; districts/*.yaml (included) add Bến Tre and Sốp Cộp
    assert list(by_slug) == ["demo", "tp-hcm", "tan-phu", "ben-tre", "son-la", "sop-cop"]
    assert bundle.organisations["tp-hcm"].name == "Thành Đoàn TP. Hồ Chí Minh"
    tan_phu = bundle.organisations["tp-hcm"].children["tan-phu"]
    assert tan_phu.name == "Quận Đoàn Tân Phú"
    assert tan_phu.units == "data/tan-phu-units.csv"
    for node in (bundle.organisations["demo"], tan_phu):
        assert set(node.channels) == {"webchat"}  # what makes it a district; no secrets
    assert {name for _, name in by_slug["tan-phu"].units} >= {f"Đoàn phường {w}" for w in WARDS}
    assert 3 <= len(by_slug["demo"].units) <= 4
    assert by_slug["demo"].menu == "menu_demo"
    assert by_slug["tan-phu"].menu == "menu_tan_phu"
    assert by_slug["tp-hcm"].menu == bundle.menu == "menu_chung"
    for slug in ("demo", "tan-phu"):
        links = by_slug[slug].links
        assert links["dangky"].flow == "dang_ky", slug
        assert links["vneid"].flow == "huong_dan_vneid", slug
        assert bundle.flows[links["huyhieuso"].flow].campaign is not None, slug
        for link in links.values():
            assert link.flow in bundle.flows, (slug, link)
    assert by_slug["tan-phu"].links["huyhieuso"].flow == "cong_dan_so"


def test_the_first_district_reaches_an_open_challenge(
    bundle: Bundle, districts: list[Any]
) -> None:
    demo = districts[0]
    slug = demo.slug
    menu = bundle.flows[demo.menu]
    first = menu.steps[0]
    assert isinstance(first, ChooseStep)
    challenges = [c.goto for c in first.choices
                  if c.goto in bundle.flows and bundle.flows[c.goto].campaign]
    assert challenges, "the first menu has no challenge button"
    for flow_id in challenges:
        campaign = bundle.flows[flow_id].campaign or ""
        assert _open_today(bundle, campaign), (slug, flow_id, campaign)
    link = demo.links["huyhieuso"]
    assert _open_today(bundle, bundle.flows[link.flow].campaign or "")


def test_the_2023_campaign_keeps_its_real_waves(bundle: Bundle) -> None:
    campaign = bundle.campaigns["cong_dan_so"]
    assert campaign.title == 'Thử thách "Công dân số" năm 2023'
    assert [(w.name, w.from_, w.to) for w in campaign.waves] == [
        ("Đợt 1", date(2023, 8, 7), date(2023, 9, 14)),
        ("Đợt 2", date(2023, 9, 15), date(2023, 10, 15)),
    ]
    for key in ("cong_dan_so", "cong_dan_so_demo"):
        assert bundle.campaigns[key].closed
        assert bundle.campaigns[key].retention_days


# --------------------------------------------------------------------------- registration


def test_registration_asks_consent_before_any_other_save(bundle: Bundle) -> None:
    steps = bundle.flows["dang_ky"].steps
    saving = [s for s in steps if isinstance(s, AskStep) and s.save]
    consent = saving[0]
    assert consent is steps[0]  # nothing is said or asked before it either
    assert consent.save == "dong_y"
    assert consent.expect.kind is ExpectKind.YES_NO
    assert "13/2023/NĐ-CP" in consent.ask
    assert consent.when_no is not None and consent.when_no.say and consent.when_no.goto
    assert [s.save for s in saving] == [
        "dong_y", "ho_ten", "don_vi", "chuc_vu", "email", "so_dien_thoai",
    ]
    kinds = {s.save: s.expect for s in saving}
    assert kinds["ho_ten"].kind is ExpectKind.TEXT and kinds["ho_ten"].min == 4
    assert kinds["don_vi"].kind is ExpectKind.UNIT
    assert kinds["chuc_vu"].options == (
        "Đoàn viên", "Bí thư/Phó Bí thư chi đoàn", "Ủy viên BCH", "Cán bộ Đoàn chuyên trách",
        "Khác",
    )
    assert kinds["email"].kind is ExpectKind.EMAIL
    assert kinds["so_dien_thoai"].kind is ExpectKind.PHONE
    email_step = next(s for s in saving if s.save == "email")
    assert email_step.retry


def test_registration_ends_with_a_summary_of_what_was_saved(bundle: Bundle) -> None:
    steps = bundle.flows["dang_ky"].steps
    summary = next(s for s in steps if s.id == "tom_tat")
    assert isinstance(summary, ChooseStep)
    shown = set(PLACEHOLDER.findall(summary.choose))
    assert {"ho_ten", "don_vi", "chuc_vu", "email", "so_dien_thoai"} <= shown
    assert {c.goto for c in summary.choices} >= {"ho_ten"}  # "Sửa lại" goes back


# --------------------------------------------------------------------------- the challenge


def _challenges(bundle: Bundle) -> dict[str, Flow]:
    return {fid: f for fid, f in bundle.flows.items() if f.campaign}


def test_challenges_have_the_four_criteria_in_the_chatbot_order(bundle: Bundle) -> None:
    challenges = _challenges(bundle)
    assert set(challenges) == {"cong_dan_so", "cong_dan_so_demo"}
    for fid, flow in challenges.items():
        assert flow.requires == "dang_ky", fid
        evidence = [s for s in flow.steps if isinstance(s, EvidenceStep)]
        assert [s.evidence for s in evidence] == list(CRITERIA), fid
        images = {s.evidence: s.image for s in evidence}
        assert images == {
            "vneid": "media/mau-vneid.png",
            "thanh_nien_vn": "media/mau-thanh-nien-vn.png",
            "thanh_toan": "media/mau-ngan-hang.png",
            "dich_vu_cong": None,
        }, fid
        for step in evidence[:3]:
            assert step.expect.kind is ExpectKind.IMAGE, (fid, step.evidence)
        assert evidence[3].expect.kind is ExpectKind.TEXT and evidence[3].expect.min == 10
        last = flow.steps.index(evidence[-1])
        submit = flow.steps[last + 1]
        assert isinstance(submit, ActionStep) and submit.action is ActionKind.SUBMIT, fid
        assert submit.say, fid


def test_both_challenges_say_exactly_the_same_things(bundle: Bundle) -> None:
    # The demo must show what the real 2023 campaign said; only the campaign differs.
    a, b = bundle.flows["cong_dan_so"], bundle.flows["cong_dan_so_demo"]
    assert a.steps == b.steps
    assert a.campaign != b.campaign


def test_sample_images_exist_decode_and_are_small(bundle: Bundle) -> None:
    referenced = {s.image for f in bundle.flows.values() for s in f.steps if s.image}
    assert len(referenced) == 3
    for relative in referenced:
        path = ROOT / relative
        assert path.is_file(), relative
        assert path.stat().st_size < 60 * 1024, relative
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (360, 640)


def test_sample_images_are_what_the_script_draws(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "scripts/make_samples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not any((d / "DejaVuSans.ttf").exists() for d in module.FONT_DIRS):
        missing("DejaVu Sans is not installed (apt-get install -y fonts-dejavu-core)")
    for drawn in module.write_samples(tmp_path):
        with Image.open(drawn) as new, Image.open(ROOT / "media" / drawn.name) as old:
            diff = ImageChops.difference(new.convert("RGB"), old.convert("RGB"))
            assert diff.getbbox() is None, f"media/{drawn.name} is stale: re-run the script"


# --------------------------------------------------------------------------- the VNeID guide


def test_vneid_guide_covers_every_stage_and_branch(bundle: Bundle) -> None:
    guide = bundle.flows["huong_dan_vneid"]
    by_id = {s.id: s for s in guide.steps if s.id}
    text = {sid: " ".join(_texts(step)) for sid, step in by_id.items()}
    expected = {
        "cai_android": "CH Play",
        "cai_iphone": "App Store",
        "dang_ky_tai_khoan": "số định danh cá nhân",
        "quet_qr": "mã QR",
        "nhap_tay": "nhập",
        "kiem_tra": "Cơ sở dữ liệu quốc gia về dân cư",
        "khong_dat": "Công an phường/xã",
        "otp": "OTP",
        "mat_khau": "8 đến 20 ký tự",
        "muc_1": "NFC",
        "muc_1_qr": "mã QR",
        "chan_dung": "chân dung",
        "kich_hoat": "thiết bị",
        "loi_thiet_bi": "tài khoản của người khác",
        "passcode": "6 chữ số",
        "cau_hoi_bao_mat": "2 câu hỏi bảo mật",
    }
    for sid, words in expected.items():
        assert sid in text, sid
        assert words in text[sid], (sid, words)
    check = by_id["kiem_tra"]
    assert isinstance(check, ChooseStep)
    assert [c.title for c in check.choices] == ["Đạt", "Không đạt"]
    install = by_id["cai_dat"]
    assert isinstance(install, ChooseStep)
    assert {c.goto for c in install.choices} >= {"cai_android", "cai_iphone"}
    # every instruction stage offers a way out when something goes wrong
    for sid in ("cai_android", "cai_iphone", "dang_ky_tai_khoan", "otp", "mat_khau", "muc_1",
                "chan_dung", "passcode"):
        step = by_id[sid]
        assert isinstance(step, ChooseStep)
        assert any(fold(c.title) in {"gap loi", "khong nhan duoc ma"} for c in step.choices), sid


def test_faq_is_reachable_and_covers_the_utilities(
    bundle: Bundle, districts: list[Any]
) -> None:
    faq = bundle.flows["hoi_dap"]
    words = " ".join(t for s in faq.steps for t in _texts(s))
    for topic in ("dịch vụ công", "Ví giấy tờ", "Thông báo lưu trú"):
        assert topic.lower() in words.lower(), topic
    guide_targets = {c.goto for s in bundle.flows["huong_dan_vneid"].steps
                     for c in getattr(s, "choices", ())}
    assert "hoi_dap" in guide_targets
    for district in districts:
        menu = bundle.flows[district.menu]
        targets = {c.goto for s in menu.steps for c in getattr(s, "choices", ())}
        assert {"hoi_dap", "huong_dan_vneid", "dang_ky"} <= targets, district.slug


# --------------------------------------------------------------------------- what people read


def test_buttons_and_texts_fit_the_platforms(bundle: Bundle) -> None:
    for fid, flow in bundle.flows.items():
        for step in flow.steps:
            for text in _texts(step):
                assert len(text) <= TEXT_MAX, (fid, step.id)
            if isinstance(step, AskStep) and step.expect.kind in (ExpectKind.YES_NO,
                                                                  ExpectKind.CHOICE):
                # answered with buttons too ("Đồng ý" / "Không đồng ý", or the options)
                assert len(step.ask) <= BUTTON_TEXT_MAX, (fid, step.id)
            if not isinstance(step, SayStep | ChooseStep) or not step.choices:
                continue
            body = step.say if isinstance(step, SayStep) else step.choose
            assert len(body) <= BUTTON_TEXT_MAX, (fid, step.id, len(body))
            titles = [fold(c.title) for c in step.choices]
            assert len(set(titles)) == len(titles), (fid, step.id)
            for choice in step.choices:
                assert len(choice.title) <= BUTTON_TITLE_MAX, (fid, step.id, choice.title)


def test_choice_words_never_shadow_a_global_command(
    bundle: Bundle, districts: list[Any]
) -> None:
    # A whole message that is a global command ("kết quả", "hủy"...) is taken as the command,
    # so a button synonym spelled the same could never be picked by typing it. "Về menu" is
    # fine on a button that goes to the menu anyway.
    menus = {district.menu for district in districts}
    for fid, flow in bundle.flows.items():
        for step in flow.steps:
            for choice in getattr(step, "choices", ()):
                home = flow.steps[0].id if fid in menus else None
                to_menu = choice.goto in ("menu", home)
                for word in (choice.title, *choice.synonyms):
                    command = match_command(word)
                    assert command is None or (command is Command.MENU and to_menu), (
                        fid, step.id, word)


def test_placeholders_name_fields_saved_before(bundle: Bundle) -> None:
    registered = {s.save for s in bundle.flows["dang_ky"].steps
                  if isinstance(s, AskStep) and s.save}
    for fid, flow in bundle.flows.items():
        known = set(BUILTIN_FIELDS)
        if flow.requires == "dang_ky" or fid == "dang_ky":
            known |= registered
        for step in flow.steps:
            for text in _texts(step) + ([step.say] if isinstance(step, ActionStep)
                                        and step.say else []):
                for name in PLACEHOLDER.findall(text):
                    assert name in known, (fid, step.id, name)


# --------------------------------------------------------------------------- the organisers' guide

GUIDE = ROOT / "docs" / "huong-dan-kich-ban.md"
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_docs_are_nfc() -> None:
    for path in (GUIDE, ROOT / "docs" / "chien-dich.md"):
        text = path.read_text(encoding="utf-8")
        assert unicodedata.normalize("NFC", text) == text, path


def test_every_guide_example_passes_check_without_warnings(tmp_path: Path) -> None:
    # Convention: each ```yaml block is a whole flows file; a block starting "# mảnh" is a
    # fragment and is skipped.
    check = importlib.import_module("flows.check")
    blocks = YAML_BLOCK.findall(GUIDE.read_text(encoding="utf-8"))
    whole = [b for b in blocks if not b.startswith("# mảnh")]
    assert len(whole) >= 20  # one per step kind and per expect type at least
    for n, block in enumerate(whole, 1):
        path = tmp_path / f"vi_du_{n}.yaml"
        path.write_text(block, encoding="utf-8")
        assert [str(p) for p in check.check(path)] == [], block


def test_guide_examples_show_every_step_kind_action_and_expect_type() -> None:
    kinds: set[str] = set()
    actions: set[ActionKind] = set()
    expects: set[ExpectKind] = set()
    for block in YAML_BLOCK.findall(GUIDE.read_text(encoding="utf-8")):
        if block.startswith("# mảnh"):
            continue
        for flow in Bundle.model_validate(yaml.safe_load(block)).flows.values():
            for step in flow.steps:
                kinds.add(step_kind(step) or "")
                if isinstance(step, ActionStep):
                    actions.add(step.action)
                if isinstance(step, AskStep):
                    expects.add(step.expect.kind)
    assert kinds == {"say", "ask", "choose", "branch", "evidence", "action", "end"}
    assert actions == set(ActionKind)
    assert expects == set(ExpectKind)
