"""The shipped Sốp Cộp flows end to end: a cadre registers and reports citizens through the
engine, a citizen self-declares through the cadre's link; the events go through the records
writer into SQLite, the counting sees them — and the citizen-ID digits are nowhere in the
database files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bots.records import Records, open_database
from bots.records.db import default_url
from bots.reports.cadres import CadreRules, cadre_board, citizen_list
from bots.reports.organisations import sync_organisations
from flows.check import load_checked
from flows.compiler import CompiledBundle, compile_bundle
from flows.engine import Engine
from flows.events import EntryReported, citizen_id_hash
from flows.vocab import Channel, ConversationKey
from tests.flows.conftest import Chat
from tests.reports.conftest import KEY

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2023, 5, 2, 3, tzinfo=UTC)
GUIDED = ("079123456789", "0791 2345 6780")  # as typed; digits 079123456789, 079123456780
SELF = "079198765432"


@pytest.fixture(scope="module")
def shipped() -> CompiledBundle:
    loaded = load_checked(ROOT / "flows.yaml")
    assert loaded.bundle is not None, [str(p) for p in loaded.errors]
    return compile_bundle(loaded.bundle, loaded.base_dir)


def _cadre_conversation(chat: Chat) -> None:
    chat.start("baocao")
    for text in ("có", "Lò Văn Cán", "sop cop", "Đoàn viên", "can@gmail.com", "0912345678"):
        chat.say(text)
    chat.press("Đúng rồi")
    chat.press("Đoàn viên")  # the cadre's kind: a member, threshold 10
    chat.say("sopcop-cb01")  # the code of the cadre's own link
    assert "Họ và tên người dân" in chat.text
    # a citizen who counts, with a screenshot
    for text in ("Lường Thị Mai", GUIDED[0], "0987654321", "Người dân", "Mức 2", "có",
                 "25/4/2023"):
        chat.say(text)
    chat.press("Gửi ảnh")
    chat.image(sha="ab" * 32)
    assert chat.texts[0] == "Đã ghi nhận người dân Lường Thị Mai."
    chat.press("Báo cáo tiếp")
    # activated before 21/4/2023: reported, not counted
    for text in ("Quàng Văn Hùng", GUIDED[1], "0987000111", "Người dân", "Mức 1", "có",
                 "20/4/2023"):
        chat.say(text)
    chat.press("Bỏ qua")
    chat.press("Xong")


def _citizen_conversation(chat: Chat) -> None:
    chat.start("sopcop-cb01")  # the cadre's link
    for text in ("có", "Cà Thị Hoa", SELF, "0977111222", "Người dân", "Mức 2", "có",
                 "28/4/2023"):
        chat.say(text)
    assert "Cảm ơn Cà Thị Hoa" in chat.text


async def _write(records: Records, chat: Chat, user: str) -> None:
    key = ConversationKey("sop-cop", Channel.WEBCHAT, user)
    for n, turn in enumerate(chat.turns):
        await records.apply(key, f"{user}-{n}", turn.events, NOW)
        await records.touch_identity(key, NOW)


@pytest.mark.parametrize("engine_key", [KEY, None], ids=["engine-hashes", "writer-hashes"])
async def test_cadre_reports_reach_the_count_and_never_the_digits(
    shipped: CompiledBundle, tmp_path: Path, engine_key: bytes | None
) -> None:
    engine = Engine(shipped, citizen_key=engine_key)
    cadre = Chat(engine, now=NOW, district="sop-cop", channel=Channel.WEBCHAT)
    _cadre_conversation(cadre)
    citizen = Chat(engine, now=NOW, district="sop-cop", channel=Channel.WEBCHAT)
    _citizen_conversation(citizen)

    entries = [e for t in (*cadre.turns, *citizen.turns) for e in t.events
               if isinstance(e, EntryReported)]
    assert [(e.kind, e.flow, dict(e.fields)["ten_cong_dan"]) for e in entries] == [
        ("cong_dan", "bao_cao_can_bo", "Lường Thị Mai"),
        ("cong_dan", "bao_cao_can_bo", "Quàng Văn Hùng"),
        ("tu_khai", "tu_khai_vneid", "Cà Thị Hoa"),
    ]
    first = dict(entries[0].fields)
    assert first["anh_man_hinh"] == "ab" * 32
    assert (first["doi_tuong"], first["muc_vneid"], first["tai_khoan_dvc"],
            first["ngay_kich_hoat"], first["sdt_cong_dan"]) == (
        "Người dân", "Mức 2", "có", "2023-04-25", "+84987654321")
    assert entries[2].ref == "sopcop-cb01"

    data = tmp_path / "data"
    db = await open_database(default_url(data))
    try:
        await sync_organisations(db, shipped)
        records = Records(db.sessions, citizen_key=KEY)
        await _write(records, cadre, "cadre")
        await _write(records, citizen, "citizen")
        rules = CadreRules.for_campaign(shipped.campaigns, "vneid_sop_cop")
        (row,) = await cadre_board(db, rules, org="sop-cop")
        assert (row.name, row.unit_slug, row.code, row.threshold) == (
            "Lò Văn Cán", "xa-sop-cop", "sopcop-cb01", 10)
        assert (row.claimed, row.counted, row.early) == (3, 2, 1)
        names = {(c.name, c.reason) for c in await citizen_list(db, rules)}
        assert names == {("Lường Thị Mai", "counted"), ("Quàng Văn Hùng", "early"),
                         ("Cà Thị Hoa", "counted")}
    finally:
        await db.close()

    files = [p for p in data.iterdir() if p.name.startswith("loa.sqlite3")]
    assert files
    stored = b"".join(p.read_bytes() for p in files)
    for digits in ("079123456789", "079123456780", SELF):
        for form in (digits, f"{digits[:4]} {digits[4:8]} {digits[8:]}"):
            assert form.encode() not in stored, form
            assert form.encode("utf-16-le") not in stored, form
    # the scan does see what is there: the phone number and the keyed hash of the ID
    assert b"+84987654321" in stored
    assert citizen_id_hash(KEY, GUIDED[0]).split(":")[1].encode() in stored
    if engine_key is not None:  # the session never held the digits either
        for chat in (cadre, citizen):
            assert chat.stored is None or b"0791" not in chat.stored
