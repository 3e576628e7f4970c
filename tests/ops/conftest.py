"""Operations fixtures: a data directory with real records (written the way the bot writes
them), real evidence files, a flow archive and an embedded conversation store.

    cds_2023 (finished; retention 180 days after 15/10/2023)
      an     tan-quy      Đợt 1, approved        files AN (own), SHARED; a text answer
      binh   phu-tho-hoa  Đợt 2, submitted       file BINH (own)
      chi    tan-quy      Đợt 2, approved        file CHI (own)
    cds_moi (running)
      binh                Đợt 1, submitted       file SHARED (the same bytes as an's)
      dung   phu-tho-hoa  Đợt 1, submitted       file DUNG
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bots.records.db import Database, open_database
from bots.records.files import FileStore
from bots.records.models import (
    Organisation,
    Review,
    ReviewDecision,
    Submission,
    SubmissionStatus,
)
from bots.records.writer import apply
from bots.runtime import Flows, load_flows
from bots.settings import Settings, from_env
from flows.events import ConsentRecorded, EvidenceSaved, FieldSaved, SubmissionSubmitted
from flows.vocab import Attachment, Channel, ConversationKey
from tests.databases import fresh_postgres

HERE = Path(__file__).parent
REPO_ROOT = HERE.parents[1]
FLOWS = HERE / "flows.yaml"
T0 = datetime(2023, 8, 10, 9, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Person:
    key: str
    name: str
    unit: str
    email: str
    phone: str  # as stored: E.164


PEOPLE = {
    "an": Person("an", "Nguyễn Văn Anh Tuấn", "tan-quy", "tuan.nguyen.ops@example.com",
                 "+84912345671"),
    "binh": Person("binh", "Trần Thị Bình Minh", "phu-tho-hoa", "binh.tran.ops@example.com",
                   "+84912345672"),
    "chi": Person("chi", "Lê Hoàng Chi Mai", "tan-quy", "chi.le.ops@example.com",
                  "+84912345673"),
    "dung": Person("dung", "Phạm Quốc Dũng Tiến", "phu-tho-hoa", "dung.pham.ops@example.com",
                   "+84912345674"),
}


def blob(label: str, size: int = 20_000) -> bytes:
    """Distinct bytes per label (evidence files need not be images for the records)."""
    seed = hashlib.sha256(label.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class World:
    settings: Settings
    db: Database
    files: FileStore
    flows: Flows
    keys: dict[str, ConversationKey] = field(default_factory=dict)
    shas: dict[str, str] = field(default_factory=dict)
    submissions: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def records_path(self) -> Path:
        return self.settings.data_dir / "loa.sqlite3"


def key_of(person: str) -> ConversationKey:
    return ConversationKey("tan-phu", Channel.WEBCHAT, f"user-{person}-0000000000000")


async def register(db: Database, person: Person, at: datetime) -> None:
    key = key_of(person.key)
    events = [
        ConsentRecorded(True, "Bạn đồng ý chứ?"),
        FieldSaved("dong_y", "co"),
        FieldSaved("ho_ten", person.name),
        FieldSaved("don_vi", person.unit),
        FieldSaved("email", person.email),
        FieldSaved("so_dien_thoai", person.phone),
    ]
    await apply(db.sessions, key, f"{person.key}-register", events, at)


async def submit(
    world: World,
    person: str,
    campaign: str,
    wave: str,
    images: list[str],
    at: datetime,
    text: str | None = None,
) -> int:
    key = key_of(person)
    events: list[Any] = []
    for label in images:
        sha = world.files.put(blob(label))
        world.shas[label] = sha
        attachment = Attachment(mime="image/png", size=20_000, sha256=sha, unique_id=label)
        events.append(EvidenceSaved(campaign, f"anh_{label}", attachment=attachment))
    if text:
        events.append(EvidenceSaved(campaign, "dich_vu_cong", text=text))
    events.append(SubmissionSubmitted(campaign, wave))
    await apply(world.db.sessions, key, f"{person}-{campaign}", events, at)
    async with world.db.reads() as session:
        sid = await session.scalar(
            select(Submission.id)
            .where(Submission.campaign == campaign)
            .order_by(Submission.id.desc())
            .limit(1)
        )
    assert sid is not None
    world.submissions[(person, campaign)] = sid
    return sid


async def approve(world: World, submission_id: int, at: datetime) -> None:
    async with world.db.sessions() as session, session.begin():
        submission = await session.get(Submission, submission_id)
        assert submission is not None
        submission.status = SubmissionStatus.APPROVED
        submission.updated_at = at
        session.add(
            Review(
                submission_id=submission_id,
                decision=ReviewDecision.APPROVE,
                reason="Đủ minh chứng",
                created_at=at,
                notify=False,
            )
        )


async def add_organisations(db: Database, flows: Flows, at: datetime) -> None:
    """The organisation rows reports keep (what bots.reports synchronises at start-up)."""
    try:
        from bots.reports.organisations import sync_organisations
    except ImportError:
        sync_organisations = None
    if sync_organisations is not None:
        await sync_organisations(db, flows.compiled)
        return
    async with db.sessions() as session, session.begin():
        for slug, name in (
            ("tan-phu", "Quận Đoàn Tân Phú"),
            ("tan-quy", "Đoàn phường Tân Quý"),
            ("phu-tho-hoa", "Đoàn phường Phú Thọ Hòa"),
        ):
            session.add(Organisation(slug=slug, name=name, created_at=at, updated_at=at))


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A PostgreSQL database created for the test and dropped after it (tests/databases.py)."""
    async with fresh_postgres("loa_ops") as url:
        yield url


@pytest.fixture
def ops_settings(tmp_path: Path) -> Settings:
    return from_env({"LOA_CONFIG": str(FLOWS), "LOA_DATA_DIR": str(tmp_path / "var")})


async def build_world(settings: Settings) -> World:
    """The people above, written the way the bot writes them, into `settings`' records."""
    flows = load_flows(FLOWS)
    db = await open_database(settings.database_url)
    files = FileStore(settings.files_dir)
    w = World(settings, db, files, flows)
    await add_organisations(db, flows, T0)
    for person in PEOPLE.values():
        await register(db, person, T0)
        w.keys[person.key] = key_of(person.key)
    later = T0 + timedelta(days=1)
    an = await submit(w, "an", "cds_2023", "Đợt 1", ["AN", "SHARED"], later,
                      text="Đăng ký khai sinh trực tuyến cho em gái")
    await approve(w, an, later + timedelta(hours=2))
    await submit(w, "binh", "cds_2023", "Đợt 2", ["BINH"], later + timedelta(days=40))
    chi = await submit(w, "chi", "cds_2023", "Đợt 2", ["CHI"], later + timedelta(days=41))
    await approve(w, chi, later + timedelta(days=42))
    now = datetime(2026, 3, 1, tzinfo=UTC)
    await submit(w, "binh", "cds_moi", "Đợt 1", ["SHARED"], now)
    await submit(w, "dung", "cds_moi", "Đợt 1", ["DUNG"], now)
    # The flow archive and the flows' media, as `loa serve` keeps them.
    bundle = settings.bundles_dir / ("a" * 64)
    bundle.mkdir(parents=True)
    (bundle / "flows.yaml").write_bytes(FLOWS.read_bytes())
    media = settings.data_dir / "media"
    media.mkdir()
    (media / f"{'b' * 64}.png").write_bytes(blob("sample"))
    return w


@pytest.fixture
async def world(ops_settings: Settings) -> AsyncIterator[World]:
    w = await build_world(ops_settings)
    try:
        yield w
    finally:
        await w.db.close()


@pytest.fixture
async def pg_world(tmp_path: Path, postgres_url: str) -> AsyncIterator[World]:
    """The same world with its records in PostgreSQL."""
    settings = from_env({"LOA_CONFIG": str(FLOWS), "LOA_DATA_DIR": str(tmp_path / "pgvar"),
                         "LOA_DATABASE_URL": postgres_url})
    w = await build_world(settings)
    try:
        yield w
    finally:
        await w.db.close()


# -- comparing data directories -------------------------------------------------------------------


def table_dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite file, ordered."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [
            row[0]
            for row in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        return {name: sorted(con.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
                for name in names}
    finally:
        con.close()


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every regular file below `root` (SQLite files and the lock excluded)."""
    found: dict[str, str] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel.startswith("before-restore-") or name == "loa.lock" or ".sqlite3" in name:
                continue
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
