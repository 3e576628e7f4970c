"""The organisation tree in the records, from the shipped flows.yaml and after it changes."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlalchemy import func, select

from bots.records import Database
from bots.records.models import Organisation, OrganisationFigures, OrganisationPath
from bots.reports.organisations import org_rows, percent_of, sync_organisations
from flows.check import load_checked
from flows.compiler import compile_bundle
from flows.schema import Bundle
from tests.reports.conftest import DEPLOYMENT

ROOT = Path(__file__).resolve().parents[2]


def test_percent_quotas_round_half_up() -> None:
    assert percent_of(5891, 40) == 2356  # Bến Tre: 2,356.4
    assert percent_of(3, 50) == 2  # 1.5
    assert percent_of(7, 12.5) == 1  # 0.875


def test_the_shipped_ben_tre_and_sop_cop_trees() -> None:
    loaded = load_checked(ROOT / "flows.yaml")
    assert loaded.bundle is not None, [str(p) for p in loaded.errors]
    rows = {r.slug: r for r in org_rows(compile_bundle(loaded.bundle, loaded.base_dir)
                                        .organisations)}
    city = rows["tp-ben-tre"]
    assert (city.name, city.members, city.quota_total, city.quota_label, city.parent) == (
        "Thành phố Bến Tre", 5891, 2356, "40%", "ben-tre")
    districts = ["tp-ben-tre", "ba-tri", "binh-dai", "chau-thanh-bt", "cho-lach", "giong-trom",
                 "mo-cay-bac", "mo-cay-nam", "thanh-phu-bt"]
    assert all(rows[s].quota_label == "40%" for s in districts)
    assert rows["cong-an-tinh-bt"].area == "Khối lực lượng vũ trang"
    units = [r for r in rows.values() if r.parent == "ben-tre"]
    province = rows["ben-tre"]
    assert province.members_total == sum(r.members or 0 for r in units)
    assert province.quota_total == sum(r.quota_total or 0 for r in units)
    assert rows["sop-cop"].ancestors == ("son-la",)
    assert rows["xa-dom-cang"].ancestors == ("sop-cop", "son-la")
    assert rows["sop-cop"].district and not rows["xa-dom-cang"].district


async def test_sync_is_idempotent_and_follows_the_file(db: Database) -> None:
    bundle = Bundle.model_validate(yaml.safe_load(DEPLOYMENT))
    assert await sync_organisations(db, bundle) == 11
    assert await sync_organisations(db, bundle) == 11
    async with db.reads() as session:
        assert await session.scalar(select(func.count()).select_from(Organisation)) == 11
        # each node with itself and its ancestors: tinh 1, quan-a 2, p1–t1 4×3, quan-b 2,
        # b1 3, sc 1, x1 x2 2×2
        assert await session.scalar(select(func.count()).select_from(OrganisationPath)) == 25
        p1 = await session.scalar(select(Organisation).where(Organisation.slug == "p1"))
        assert p1 is not None and (p1.members, p1.quota, p1.quota_percent, p1.area) == (
            4, None, 50, "Khối phường")
    data = yaml.safe_load(DEPLOYMENT)
    quan_a = data["organisations"]["tinh"]["children"]["quan-a"]["children"]
    del quan_a["t1"]
    quan_a["p1"]["name"] = "Đoàn phường Một"
    await sync_organisations(db, Bundle.model_validate(data))
    async with db.reads() as session:
        names = dict((await session.execute(select(Organisation.slug, Organisation.name))).all())
        live = set((await session.scalars(
            select(Organisation.slug).join(
                OrganisationFigures, OrganisationFigures.organisation_id == Organisation.id)
        )).all())
    assert names["p1"] == "Đoàn phường Một"
    assert "t1" in names and "t1" not in live  # kept for old records, left out of reports
    assert len(live) == 10
