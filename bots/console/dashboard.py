"""The reports dashboard: a campaign's progress in the organiser's own subtree.

    GET /admin/bao-cao?campaign=&wave=&org=     figures, charts (server-drawn SVG), tables
    GET /admin/bao-cao/tai-ve.xlsx?…            the same as an Excel workbook
    GET /admin/bao-cao/tai-ve.csv?…             the progress table as CSV (Excel-ready)

Every figure comes from bots/reports (aggregate SQL: `queries.progress`, `queries.weekly_active`,
`daily.daily_progress`, `cadres.cadre_board` / `unit_board`), scoped by `org=` — a node of the
organiser's subtree (default: its root); any other node answers 404, as everywhere in the
console. Exports are for admins and organisers (403 for reviewers) and each is an audit row.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web

from bots.console import audit, charts, fmt
from bots.console.access import can_export, roots_of
from bots.console.app import VISITOR, Visitor, _deps, _forbidden, _NotFound, client_ip, render
from bots.console.control import flows_of_districts, visible_districts
from bots.records.writer import week_of
from bots.reports import cadres, daily, exports, queries
from flows.compiler import CompiledBundle
from flows.schema import ExpectKind
from flows.suggest import fold

WEEKS = 8
LEADERS = 20  # cadres shown on the page (the export has them all)


@dataclass(frozen=True, slots=True)
class Selection:
    campaign: str
    wave: str | None
    org: str

    def query(self) -> dict[str, str]:
        out = {"campaign": self.campaign, "org": self.org}
        if self.wave:
            out["wave"] = self.wave
        return out


@dataclass(slots=True)
class Figures:
    rows: list[queries.ProgressRow]
    head: queries.ProgressRow | None
    children: list[queries.ProgressRow]
    days: list[daily.DayCount]
    weeks: list[tuple[date, int]]
    board: list[cadres.CadreRow] = field(default_factory=list)
    awards: list[cadres.CadreRow] = field(default_factory=list)
    units: list[cadres.UnitRow] = field(default_factory=list)
    rules: cadres.CadreRules | None = None


def unit_fields(bundle: CompiledBundle) -> tuple[str, ...]:
    found = tuple(n for n, kind in bundle.field_kinds.items() if kind is ExpectKind.UNIT)
    return found or queries.UNIT_FIELDS


def org_choices(visitor: Visitor) -> list[tuple[str, str, int]]:
    """(slug, name, depth) of every node the visitor may report on."""
    out: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    for root in roots_of(visitor.organiser, visitor.tree):
        if root not in visitor.tree:
            continue
        base = visitor.tree.nodes[root].depth
        for node in visitor.tree.walk(root):
            if node.slug not in seen:
                seen.add(node.slug)
                out.append((node.slug, node.name, node.depth - base))
    return out


def _default_campaign(visitor: Visitor) -> str:
    bundle = visitor.bundle
    used = flows_of_districts(bundle, visible_districts(visitor.organiser, visitor.tree, bundle))
    for fid in used:
        campaign = bundle.flows[fid].campaign
        if campaign is not None and campaign in bundle.campaigns:
            return campaign
    return next(iter(bundle.campaigns), "")


def select(visitor: Visitor, query: Any) -> Selection:
    """The campaign, wave and node asked for; `_NotFound` for anything outside the visitor's
    subtree or unknown."""
    bundle = visitor.bundle
    campaign = str(query.get("campaign") or "") or _default_campaign(visitor)
    info = bundle.campaigns.get(campaign)
    if info is None:
        raise _NotFound()
    asked_wave = str(query.get("wave") or "").strip()
    wave: str | None = None
    if asked_wave:
        wave = next((w.name for w in info.waves if w.name == asked_wave), None) or next(
            (w.name for w in info.waves if fold(w.name) == fold(asked_wave)), None)
        if wave is None:
            raise _NotFound()
    allowed = [slug for slug, _, _ in org_choices(visitor)]
    org = str(query.get("org") or "") or (allowed[0] if allowed else "")
    if org not in allowed:
        raise _NotFound()
    return Selection(campaign, wave, org)


def _weeks(rows: Sequence[queries.WeekActivity], slug: str, now: datetime) -> list[tuple[date,
                                                                                         int]]:
    last = week_of(now)
    found = {r.week_start: r.active for r in rows if r.slug == slug}
    return [(w, found.get(w, 0)) for w in (last - timedelta(weeks=n)
                                          for n in range(WEEKS - 1, -1, -1))]


async def figures(db: Any, bundle: CompiledBundle, sel: Selection, now: datetime) -> Figures:
    fields = unit_fields(bundle)
    rows = await queries.progress(db, sel.campaign, wave=sel.wave, org=sel.org, as_of=now,
                                  unit_fields=fields)
    head = next((r for r in rows if r.slug == sel.org), None)
    children = [r for r in rows if r.parent == sel.org]
    days = await daily.daily_progress(db, sel.campaign, wave=sel.wave, org=sel.org,
                                      unit_fields=fields)
    activity = await queries.weekly_active(db, org=sel.org, weeks=WEEKS, until=now, depth=0,
                                           unit_fields=fields)
    result = Figures(rows, head, children, days, _weeks(activity, sel.org, now))
    rules = cadres.CadreRules.for_campaign(bundle.campaigns, sel.campaign)
    board = await cadres.cadre_board(db, rules, org=sel.org, unit_fields=fields)
    if any(r.claimed for r in board):
        result.rules = rules
        result.board = board
        result.awards = [r for r in board if r.individual_award]
        result.units = await cadres.unit_board(db, rules, org=sel.org, unit_fields=fields)
    return result


def _bars(found: Figures) -> list[charts.Bar]:
    shown = found.children or ([found.head] if found.head is not None else [])
    return [
        charts.Bar(r.name, r.approved, r.quota or r.members, max(r.submitted - r.approved, 0))
        for r in shown
    ]


def _subtitle(bundle: CompiledBundle, sel: Selection, org_name: str, now: datetime) -> str:
    parts = [bundle.campaigns[sel.campaign].title, sel.wave or "Mọi đợt", org_name,
             f"lập ngày {now.astimezone(fmt.LOCAL):%d/%m/%Y %H:%M}"]
    return " · ".join(parts)


async def dashboard(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    bundle = visitor.bundle
    if not bundle.campaigns:
        return render(request, "dashboard.html", active_page="reports", empty=True,
                      sel=None, found=None)
    sel = select(visitor, request.query)
    now = deps.clock()
    found = await figures(deps.database(), bundle, sel, now)
    info = bundle.campaigns[sel.campaign]
    target = (found.head.quota or found.head.members) if found.head is not None else None
    base_depth = found.head.depth if found.head is not None else 0
    return render(
        request, "dashboard.html",
        active_page="reports",
        empty=False,
        sel=sel,
        found=found,
        info=info,
        campaigns=[(slug, c.title) for slug, c in bundle.campaigns.items()],
        waves=[w.name for w in info.waves],
        orgs=org_choices(visitor),
        org_name=visitor.tree.name(sel.org),
        base_depth=base_depth,
        bars=charts.progress_bars(_bars(found), "Tiến độ so với chỉ tiêu theo đơn vị"),
        line=charts.cumulative_line(
            [(d.day, d.submitted_total, d.approved_total) for d in found.days],
            "Số người đã được duyệt (cộng dồn theo ngày)", target),
        weekly=charts.weekly_columns(found.weeks, "Số người hoạt động mỗi tuần"),
        percent=_percent,
        day=_day,
        can_download=can_export(visitor.role),
    )


def _percent(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 100:.1f}".replace(".", ",") + "%"


def _day(value: datetime | date | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(fmt.LOCAL).date()
    return value.strftime("%d/%m/%Y")


# -- downloads ------------------------------------------------------------------------------------


def daily_table(days: Sequence[daily.DayCount], subtitle: str) -> exports.Table:
    Column, Kind = exports.Column, exports.Kind
    columns = (
        Column("Ngày", Kind.DATE),
        Column("Nộp lần đầu trong ngày", Kind.INT),
        Column("Được duyệt trong ngày", Kind.INT),
        Column("Đã nộp (cộng dồn)", Kind.INT),
        Column("Đã duyệt (cộng dồn)", Kind.INT),
    )
    body = tuple((d.day, d.submitted, d.approved, d.submitted_total, d.approved_total)
                 for d in days)
    return exports.Table("Tiến độ theo ngày", columns, body, subtitle, sheet="Theo ngày")


async def _tables(request: web.Request, visitor: Visitor, sel: Selection,
                  now: datetime, *, full: bool) -> list[exports.Table]:
    deps = _deps(request)
    db = deps.database()
    bundle = visitor.bundle
    found = await figures(db, bundle, sel, now)
    subtitle = _subtitle(bundle, sel, visitor.tree.name(sel.org), now)
    title = f"Tiến độ {sel.wave}" if sel.wave else "Tiến độ theo đơn vị"
    tables = [exports.progress_table(found.rows, title, subtitle)]
    if not full:
        return tables
    tables.append(daily_table(found.days, subtitle))
    activity = await queries.weekly_active(db, org=sel.org, weeks=WEEKS, until=now,
                                           unit_fields=unit_fields(bundle))
    names = {r.slug: r.name for r in found.rows}
    tables.append(exports.weekly_table(activity, names, "Số người hoạt động mỗi tuần"))
    if found.board:
        tables.append(exports.cadre_table(found.board, "Cán bộ hướng dẫn", subtitle))
        awards = exports.cadre_table(found.awards, "Đề nghị khen thưởng cá nhân", subtitle)
        tables.append(replace(awards, sheet="Khen cá nhân"))
        tables.append(exports.unit_award_table(found.units, "Tập thể (bình quân mỗi cán bộ)",
                                               subtitle))
    return tables


def _filename(sel: Selection, now: datetime, suffix: str) -> str:
    parts = ["bao-cao", sel.campaign, sel.org]
    if sel.wave:
        parts.append(re.sub(r"[^a-z0-9]+", "", fold(sel.wave).lower()) or "dot")
    parts.append(now.astimezone(fmt.LOCAL).strftime("%Y%m%d-%H%M"))
    return "-".join(re.sub(r"[^A-Za-z0-9_-]+", "", p) for p in parts) + suffix


async def _download(request: web.Request, kind: str) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    sel = select(visitor, request.query)  # 404 outside the subtree, before anything else
    if not can_export(visitor.role):
        return _forbidden(request, "Tài khoản người chấm không tải được báo cáo.")
    now = deps.clock()
    tables = await _tables(request, visitor, sel, now, full=kind == "xlsx")
    if kind == "xlsx":
        buffer = io.BytesIO()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, exports.write_xlsx, tables, buffer)  # CPU work
        body = buffer.getvalue()
        content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    else:
        body = exports.csv_bytes(tables[0])
        content_type = "text/csv"
    async with deps.database().sessions() as session, session.begin():
        audit.record(session, visitor.organiser, audit.EXPORTED, now, ip=client_ip(request),
                     report="bao-cao", format=kind, org=sel.org, campaign=sel.campaign,
                     wave=sel.wave or "", rows=len(tables[0].rows))
    headers = {"Content-Disposition": f'attachment; filename="{_filename(sel, now, "." + kind)}"'}
    if kind == "csv":
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


async def download_xlsx(request: web.Request) -> web.StreamResponse:
    return await _download(request, "xlsx")


async def download_csv(request: web.Request) -> web.StreamResponse:
    return await _download(request, "csv")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/bao-cao", dashboard, name="reports")
    router.add_get("/bao-cao/tai-ve.xlsx", download_xlsx, name="reports_xlsx")
    router.add_get("/bao-cao/tai-ve.csv", download_csv, name="reports_csv")


__all__ = ["Figures", "Selection", "add_routes", "daily_table", "figures", "org_choices",
           "select"]
