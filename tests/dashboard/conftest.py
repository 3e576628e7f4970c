"""Dashboard fixtures: the reports tests' deployment and seeded records (tests/reports: figures
worked out by hand there), the console mounted at /admin over them, and accounts at each level.

    tinh (Tỉnh đoàn Mẫu)      admin, reviewer_root
      quan-a (Quận Đoàn A)     org_a, reviewer_a (units p1 only)
      quan-b (Quận Đoàn B)     org_b
    sc (Huyện đoàn SC)        org_sc            (cadre reports: campaign vneid)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from bots.console import auth
from bots.console.app import COOKIE, ConsoleDeps, mount_console
from bots.console.tree import OrgTree
from bots.records.db import Database, default_url, open_database
from bots.records.files import FileStore
from bots.records.models import Organiser, OrganiserRole
from bots.reports.organisations import sync_organisations
from bots.runtime import load_flows
from flows.compiler import CompiledBundle
from flows.vocab import Inbound
from tests.console.conftest import PASSWORD, password_hash
from tests.reports.conftest import DEPLOYMENT
from tests.reports.seed import seed_cadres, seed_progress

# The week of 14/08/2023 (Monday) is "this week" for the dashboard; every approval of the seed
# (up to 20/09/2023) is before the clock.
NOW = datetime(2023, 8, 20, 10, tzinfo=UTC)
LATER = datetime(2023, 10, 1, 10, tzinfo=UTC)

ACCOUNTS = {
    # name: (login, role, org, units)
    "admin": ("admin@tinh.vn", OrganiserRole.ADMIN, "tinh", []),
    "reviewer_root": ("cham@tinh.vn", OrganiserRole.REVIEWER, "tinh", []),
    "org_a": ("quan-a@tinh.vn", OrganiserRole.ORGANISER, "quan-a", []),
    "reviewer_a": ("cham.p1@tinh.vn", OrganiserRole.REVIEWER, "quan-a", ["p1"]),
    "org_b": ("quan-b@tinh.vn", OrganiserRole.ORGANISER, "quan-b", []),
    "org_sc": ("sc@tinh.vn", OrganiserRole.ORGANISER, "sc", []),
}

Client = TestClient[Any, Any]
AiohttpClient = Callable[..., Awaitable[Client]]


@dataclass
class Board:
    client: Client
    db: Database
    bundle: CompiledBundle
    tree: OrgTree
    now: datetime
    organisers: dict[str, int] = field(default_factory=dict)

    async def sign_in(self, who: str) -> str:
        async with self.db.sessions() as session, session.begin():
            organiser = await session.get(Organiser, self.organisers[who])
            assert organiser is not None
            token = await auth.open_session(session, organiser, self.now, auth.SessionPolicy(),
                                            ip="127.0.0.1", user_agent="pytest")
        self.client.session.cookie_jar.clear()
        self.client.session.cookie_jar.update_cookies(
            {COOKIE: token}, URL(str(self.client.make_url("/admin/"))))
        return auth.csrf_for(token)


def deployment(folder: Path) -> CompiledBundle:
    """The reports tests' deployment through the real loader and check."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flows.yaml"
    path.write_text(DEPLOYMENT, encoding="utf-8")
    return load_flows(path).compiled


async def _notify(inbound: Inbound) -> bool:
    return True


@pytest.fixture
def clock_at() -> datetime:
    return NOW


@pytest.fixture
async def board(tmp_path: Path, aiohttp_client: AiohttpClient,
                clock_at: datetime) -> AsyncIterator[Board]:
    bundle = deployment(tmp_path / "conf")
    db = await open_database(default_url(tmp_path / "data"))
    await sync_organisations(db, bundle)
    await seed_progress(db)
    await seed_cadres(db)
    tree = OrgTree.from_organisations(bundle.organisations, bundle.districts)
    organisers: dict[str, int] = {}
    async with db.sessions() as session, session.begin():
        for name, (login, role, org, units) in ACCOUNTS.items():
            account = await auth.create_organiser(
                session, login=login, password_hash=password_hash(), role=role, org=org,
                now=clock_at, name=f"Cán bộ {name}", units=units, created_by="test")
            organisers[name] = account.id
    deps = ConsoleDeps(db=db, files=FileStore(tmp_path / "files"), flows=lambda: bundle,
                       tree=lambda: tree, notify=_notify, clock=lambda: clock_at)
    app = web.Application()
    mount_console(app, deps)
    client = await aiohttp_client(app)
    yield Board(client, db, bundle, tree, clock_at, organisers)
    await db.close()


LOGINS = {name: login for name, (login, _, _, _) in ACCOUNTS.items()}
__all__ = ["LATER", "LOGINS", "NOW", "PASSWORD", "Board"]
