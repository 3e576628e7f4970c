"""The console_flows fixtures: the real server (`bots.server.build_app`: runtime, console at
/admin with the runtime's reloader) over a copy of `deployment/` in tmp_path, and the console
tests' people and accounts (tests/console/conftest.py `seed`) written into its records.

    tp-hcm                admin (root admin: uploads, reloads)
      tan-phu             org_a, admin_a (district admin), reviewer (tan-quy only)
        tan-quy, phu-tho-hoa   (data/tan-phu-units.csv)
      binh-tan            org_b; flow hoi_dap_binh_tan (districts/binh-tan.yaml)
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bots.runtime import Runtime
from bots.server import build_app
from bots.settings import from_env
from tests.console.conftest import Clock, World, quick_sign_in, seed

HERE = Path(__file__).parent
DEPLOYMENT = HERE / "deployment"

Client = TestClient[Any, Any]
AiohttpClient = Callable[..., Awaitable[Client]]


@dataclass
class Site:
    client: Client
    runtime: Runtime
    world: World
    config: Path

    async def sign_in(self, who: str) -> str:
        """Log `who` in (a session row and its cookie); returns the CSRF token."""
        return await quick_sign_in(self.client, self.world, who)

    @property
    def base(self) -> Path:
        return self.config.parent


@pytest.fixture
async def site(tmp_path: Path, aiohttp_client: AiohttpClient) -> AsyncIterator[Site]:
    conf = tmp_path / "conf"
    shutil.copytree(DEPLOYMENT, conf)
    settings = from_env({"LOA_CONFIG": str(conf / "flows.yaml"),
                         "LOA_DATA_DIR": str(tmp_path / "var")})
    runtime = Runtime(settings, sweep_every=0)
    runtime.load()
    client = await aiohttp_client(build_app(runtime))  # starts the runtime
    assert runtime.flows is not None
    world = World(db=runtime.db, files=runtime.files, bundle=runtime.flows.compiled,
                  tree=_tree(runtime), clock=Clock(datetime.now(UTC)))
    await seed(world)
    yield Site(client, runtime, world, conf / "flows.yaml")


def _tree(runtime: Runtime) -> Any:
    from bots.console.tree import OrgTree

    assert runtime.flows is not None
    compiled = runtime.flows.compiled
    return OrgTree.from_organisations(compiled.organisations, compiled.districts)
