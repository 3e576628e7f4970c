"""What the records keep for reports: reported entries (a citizen ID only as its keyed hash),
weekly activity, and the key itself. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from bots.records import Database, Records
from bots.records.models import ParticipantWeek, ReportedEntry
from bots.records.writer import week_of
from bots.reports.citizens import KEY_FILE, CitizenKeyError, citizen_key
from flows.events import CITIZEN_ID_HASH, EntryReported, citizen_id_hash
from flows.vocab import Channel, ConversationKey
from tests.reports.conftest import KEY

WHO = ConversationKey("sc", Channel.WEBCHAT, "cadre-1")
NOW = datetime(2023, 5, 2, 3, tzinfo=UTC)
CCCD = "079123456789"


def _entry(value: str, **extra: str) -> EntryReported:
    fields = (("ten_cong_dan", "Lường Thị Mai"), ("cccd_cong_dan", value), *extra.items())
    return EntryReported("cong_dan", "bao_cao_can_bo", fields, ("cccd_cong_dan",), "vneid",
                         "Đợt 1", "cb01")


async def _rows(db: Database) -> list[ReportedEntry]:
    async with db.reads() as session:
        return list(await session.scalars(select(ReportedEntry).order_by(ReportedEntry.id)))


async def test_an_entry_keeps_the_hash_never_the_number(db: Database) -> None:
    records = Records(db.sessions, citizen_key=KEY)
    await records.apply(WHO, "m1", [_entry("0791 2345 6789", doi_tuong="Người dân")], NOW)
    await records.apply(WHO, "m1", [_entry(CCCD)], NOW)  # a replay writes nothing
    # the engine's own hash (it held the key) is kept as it is
    await records.apply(WHO, "m2", [_entry(citizen_id_hash(KEY, CCCD))], NOW)
    first, second = await _rows(db)
    expected = hmac.new(KEY, CCCD.encode(), hashlib.sha256).hexdigest()
    assert first.subject_hash == second.subject_hash == expected
    assert first.fields == {
        "ten_cong_dan": "Lường Thị Mai",
        "cccd_cong_dan": CITIZEN_ID_HASH + expected,
        "doi_tuong": "Người dân",
    }
    assert (first.kind, first.flow, first.campaign, first.wave, first.ref, first.district) == (
        "cong_dan", "bao_cao_can_bo", "vneid", "Đợt 1", "cb01", "sc")
    assert first.created_at == NOW


async def test_a_value_that_is_no_number_is_not_stored(db: Database) -> None:
    await Records(db.sessions, citizen_key=KEY).apply(WHO, "m1", [_entry("không nhớ")], NOW)
    (row,) = await _rows(db)
    assert row.subject_hash is None
    assert "cccd_cong_dan" not in row.fields


async def test_without_a_key_the_writer_uses_the_deployments(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "deployment-secret-0123456789"
    monkeypatch.setenv("LOA_CITIZEN_KEY", secret)
    await Records(db.sessions).apply(WHO, "m1", [_entry(CCCD)], NOW)
    (row,) = await _rows(db)
    assert row.subject_hash == citizen_id_hash(secret.encode(), CCCD)[len(CITIZEN_ID_HASH):]


async def test_every_message_counts_in_its_vietnamese_week(db: Database) -> None:
    records = Records(db.sessions)
    sunday_night = datetime(2023, 8, 13, 16, 30, tzinfo=UTC)  # 23:30 Sunday in Vietnam
    monday_early = datetime(2023, 8, 13, 17, 30, tzinfo=UTC)  # 00:30 Monday
    for when in (datetime(2023, 8, 7, 1, tzinfo=UTC), sunday_night, monday_early,
                 datetime(2023, 8, 15, 9, tzinfo=UTC)):
        await records.touch_identity(WHO, when)
    async with db.reads() as session:
        weeks = (await session.scalars(select(ParticipantWeek).order_by(
            ParticipantWeek.week_start))).all()
    assert [(w.week_start, w.messages, w.first_at, w.last_at) for w in weeks] == [
        (date(2023, 8, 7), 2, datetime(2023, 8, 7, 1, tzinfo=UTC), sunday_night),
        (date(2023, 8, 14), 2, monday_early, datetime(2023, 8, 15, 9, tzinfo=UTC)),
    ]
    assert week_of(sunday_night) == date(2023, 8, 7)


def test_the_key_comes_from_the_environment_or_a_file_made_once(tmp_path: Path) -> None:
    assert citizen_key(tmp_path, {"LOA_CITIZEN_KEY": " a-long-enough-secret "}) == (
        b"a-long-enough-secret")
    with pytest.raises(CitizenKeyError, match="quá ngắn"):
        citizen_key(tmp_path, {"LOA_CITIZEN_KEY": "short"})
    assert not (tmp_path / KEY_FILE).exists()
    made = citizen_key(tmp_path / "var", {})
    path = tmp_path / "var" / KEY_FILE
    assert len(made) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert citizen_key(tmp_path / "var", {}) == made  # read back, not made again
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temporary left
    path.write_text("not hex\n", encoding="ascii")
    with pytest.raises(CitizenKeyError, match="hex"):
        citizen_key(tmp_path / "var", {})
