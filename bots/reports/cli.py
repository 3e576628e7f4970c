"""`loa report`: progress, name lists and cadre counts of a campaign, as a terminal table, CSV
or XLSX.

    loa report --campaign cong_dan_so                       # tiến độ, mọi đợt, cả cây
    loa report --campaign cong_dan_so --wave "Đợt 1" --org tan-phu --format xlsx --out dot1.xlsx
    loa report --campaign cong_dan_so --kind names --month 2023-09 --format csv --out ds.csv
    loa report --campaign vneid_sop_cop --kind cadres --wave "Đợt 1"
    loa report --campaign vneid_sop_cop --kind final --format xlsx --out tong-ket.xlsx

The organisation tree is synchronised from flows.yaml (LOA_CONFIG / --config) first, so the
report always follows the file. What each figure means: docs/bao-cao.md.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import re
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bots.reports.exports import Table

KINDS = ("progress", "names", "cadres", "citizens", "final")
FORMATS = ("table", "csv", "xlsx")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`loa report`'s options (cheap: nothing heavy is imported here)."""
    parser.add_argument("--campaign", required=True, help="mã chiến dịch trong flows.yaml")
    parser.add_argument("--wave", default=None, help='tên đợt, ví dụ "Đợt 1" (mặc định: mọi đợt)')
    parser.add_argument("--org", default=None, help="mã đơn vị: chỉ báo cáo cây dưới đơn vị này")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="progress",
        help="progress: tiến độ theo đơn vị; names: danh sách người tham gia; cadres: cán bộ "
        "hướng dẫn và khen thưởng; citizens: danh sách người dân được hướng dẫn; final: tổng kết",
    )
    parser.add_argument("--month", default=None, help="báo cáo tháng NĂM-THÁNG, ví dụ 2023-09")
    parser.add_argument("--as-of", default=None, help="tính đến ngày NĂM-THÁNG-NGÀY")
    parser.add_argument("--format", choices=FORMATS, default="table", help="mặc định: table")
    parser.add_argument("--out", default=None, help="tệp kết quả (csv, xlsx)")
    parser.add_argument("--config", default=None, help="tệp kịch bản (LOA_CONFIG)")


class CommandError(Exception):
    """A problem the organiser can fix; the message is Vietnamese."""


@dataclass(frozen=True, slots=True)
class Period:
    since: datetime | None  # start of the month (names of the month)
    until: datetime | None  # end of the wave / month / --as-of day
    as_of: datetime  # the week counted as "this week"
    label: str


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"{what} '{text}' không đúng dạng NĂM-THÁNG-NGÀY (ví dụ 2023-09-14)"
        ) from None


def _period(args: argparse.Namespace, wave: Any) -> Period:
    from bots.reports.queries import end_of_day, start_of_day

    now = datetime.now(UTC)
    since: datetime | None = None
    until: datetime | None = None
    label = ""
    if args.month:
        match = re.fullmatch(r"(\d{4})-(\d{1,2})", args.month.strip())
        if not match or not 1 <= int(match[2]) <= 12:
            raise CommandError(f"tháng '{args.month}' không đúng dạng NĂM-THÁNG (ví dụ 2023-09)")
        year, month = int(match[1]), int(match[2])
        last = calendar.monthrange(year, month)[1]
        since = start_of_day(date(year, month, 1))
        until = end_of_day(date(year, month, last))
        label = f"tháng {month:02d}/{year}"
    if args.as_of:
        day = _day(args.as_of, "ngày")
        until = min(until, end_of_day(day)) if until else end_of_day(day)
        label = f"tính đến ngày {day:%d/%m/%Y}"
    elif wave is not None and not args.month and args.kind in ("cadres", "citizens"):
        # A Sốp Cộp wave report is the count so far at the wave's deadline.
        until = end_of_day(wave.to)
        label = f"tính đến hết ngày {wave.to:%d/%m/%Y}"
    as_of = min(until, now) if until is not None else now
    return Period(since, until, as_of, label)


def _subtitle(title: str, wave: str | None, org_name: str | None, period: Period) -> str:
    from bots.records.writer import LOCAL_TZ

    parts = [title]
    if wave:
        parts.append(wave)
    if org_name:
        parts.append(org_name)
    if period.label:
        parts.append(period.label)
    parts.append(f"lập ngày {datetime.now(UTC).astimezone(LOCAL_TZ):%d/%m/%Y %H:%M}")
    return " · ".join(parts)


async def build_tables(
    db: Any,
    compiled: Any,
    *,
    campaign: str,
    kind: str,
    wave: str | None = None,
    org: str | None = None,
    period: Period | None = None,
) -> list[Table]:
    """The tables of one report (what `loa report` writes; the console may call it too)."""
    from bots.reports import cadres as cadre_reports
    from bots.reports import exports, queries
    from flows.schema import ExpectKind

    info = compiled.campaigns[campaign]
    period = period or Period(None, None, datetime.now(UTC), "")
    unit_fields = tuple(
        name for name, k in compiled.field_kinds.items() if k is ExpectKind.UNIT
    ) or queries.UNIT_FIELDS
    org_name = compiled.unit_names.get(org) if org else None
    subtitle = _subtitle(info.title, wave, org_name, period)
    tables: list[Table] = []

    async def progress_for(wave_name: str | None, sheet: str) -> None:
        rows = await queries.progress(
            db, campaign, wave=wave_name, org=org, as_of=period.as_of, until=period.until,
            unit_fields=unit_fields,
        )
        table = exports.progress_table(
            rows,
            f"Tiến độ {wave_name}" if wave_name else "Tiến độ theo đơn vị",
            _subtitle(info.title, wave_name, org_name, period),
        )
        tables.append(_resheet(table, sheet))

    rules = cadre_reports.CadreRules.for_campaign(compiled.campaigns, campaign)

    async def cadre_tables() -> None:
        board = await cadre_reports.cadre_board(
            db, rules, org=org, until=period.until, unit_fields=unit_fields
        )
        if kind == "final" and not any(r.claimed for r in board):
            return  # no cadre reports in this campaign: no cadre sheets
        tables.append(exports.cadre_table(board, "Cán bộ hướng dẫn", subtitle))
        awards = [r for r in board if r.individual_award]
        tables.append(
            _resheet(
                exports.cadre_table(awards, "Đề nghị khen thưởng cá nhân", subtitle),
                "Khen cá nhân",
            )
        )
        units = await cadre_reports.unit_board(
            db, rules, org=org, until=period.until, unit_fields=unit_fields
        )
        tables.append(exports.unit_award_table(units, "Tập thể (bình quân mỗi cán bộ)", subtitle))

    if kind == "progress":
        await progress_for(wave, "Tiến độ")
    elif kind == "names":
        rows = await queries.name_list(
            db, campaign, org=org, wave=wave, until=period.until, unit_fields=unit_fields
        )
        tables.append(exports.names_table(rows, "Danh sách người tham gia", subtitle))
    elif kind == "cadres":
        await cadre_tables()
    elif kind == "citizens":
        citizens = await cadre_reports.citizen_list(
            db, rules, org=org, since=period.since, until=period.until, unit_fields=unit_fields
        )
        tables.append(exports.citizens_table(citizens, "Người dân được hướng dẫn", subtitle))
    else:  # final
        await progress_for(None, "Tổng hợp")
        for w in info.waves:
            await progress_for(w.name, w.name)
        rows = await queries.name_list(
            db, campaign, org=org, until=period.until, unit_fields=unit_fields
        )
        tables.append(exports.names_table(rows, "Danh sách người tham gia", subtitle))
        await cadre_tables()
        if any(t.sheet == "Cán bộ" for t in tables):
            citizens = await cadre_reports.citizen_list(
                db, rules, org=org, until=period.until, unit_fields=unit_fields
            )
            tables.append(exports.citizens_table(citizens, "Người dân được hướng dẫn", subtitle))
    return tables


def _resheet(table: Table, sheet: str) -> Table:
    from dataclasses import replace

    return replace(table, sheet=sheet)


def _default_out(args: argparse.Namespace, suffix: str) -> Path:
    parts = ["bao-cao", args.campaign, args.kind]
    if args.wave:
        parts.append(re.sub(r"[^A-Za-z0-9]+", "", _ascii(args.wave)).lower() or "dot")
    if args.month:
        parts.append(args.month)
    return Path("-".join(parts) + suffix)


def _ascii(text: str) -> str:
    from flows.text import fold

    return fold(text)


def _write(tables: list[Table], args: argparse.Namespace) -> None:
    from bots.reports import exports

    if args.format == "table":
        skip = ("Mã", "Cách tính chỉ tiêu", "% chỉ tiêu (nộp)")
        text = "\n".join(exports.render_text(t, skip=skip) for t in tables)
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"Đã ghi {args.out}")
        else:
            sys.stdout.write(text)
        return
    if args.format == "xlsx":
        out = Path(args.out) if args.out else _default_out(args, ".xlsx")
        exports.write_xlsx(tables, out)
        print(f"Đã ghi {out}")
        return
    if not args.out:  # CSV to the terminal: no BOM (a file gets one)
        for table in tables:
            exports.write_csv(table, sys.stdout, bom=False)
        return
    out = Path(args.out)
    if len(tables) == 1:
        exports.write_csv(tables[0], out)
        print(f"Đã ghi {out}")
        return
    for table in tables:
        name = re.sub(r"[^a-z0-9]+", "-", _ascii(table.sheet or table.title).lower()).strip("-")
        path = out.with_name(f"{out.stem}-{name}{out.suffix or '.csv'}")
        exports.write_csv(table, path)
        print(f"Đã ghi {path}")


async def _run(args: argparse.Namespace) -> None:
    from bots.records import open_database
    from bots.reports.organisations import sync_organisations
    from bots.settings import load
    from flows.check import format_problem, load_checked
    from flows.compiler import compile_bundle

    settings = load(args)
    config = settings.config
    if not Path(config).is_file():
        raise CommandError(f"không tìm thấy tệp kịch bản {config} (đặt LOA_CONFIG hoặc --config)")
    loaded = load_checked(config)
    if loaded.bundle is None:
        problems = "\n".join(format_problem(p) for p in loaded.errors)
        raise CommandError(f"{config} còn lỗi, chạy `loa check` để xem:\n{problems}")
    compiled = compile_bundle(loaded.bundle, loaded.base_dir)
    campaign = compiled.campaigns.get(args.campaign)
    if campaign is None:
        known = ", ".join(compiled.campaigns) or "(chưa có)"
        raise CommandError(f"không có chiến dịch '{args.campaign}' (các chiến dịch: {known})")
    wave = None
    if args.wave:
        wave = next((w for w in campaign.waves if w.name == args.wave), None)
        if wave is None:
            from flows.text import fold

            wave = next((w for w in campaign.waves if fold(w.name) == fold(args.wave)), None)
        if wave is None:
            names = ", ".join(f'"{w.name}"' for w in campaign.waves) or "(không có đợt nào)"
            raise CommandError(f"chiến dịch '{args.campaign}' không có đợt '{args.wave}' "
                               f"(các đợt: {names})")
    if args.org and args.org not in compiled.unit_names:
        raise CommandError(f"không có đơn vị '{args.org}' trong {config}")
    period = _period(args, wave)
    db = await open_database(settings.database_url)
    try:
        await sync_organisations(db, compiled)
        tables = await build_tables(
            db, compiled, campaign=args.campaign, kind=args.kind,
            wave=wave.name if wave is not None and args.kind in ("progress", "names") else None,
            org=args.org, period=period,
        )
    finally:
        await db.close()
    _write(tables, args)


def main(args: argparse.Namespace) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    from bots.reports.citizens import CitizenKeyError
    from bots.settings import SettingsError

    try:
        asyncio.run(_run(args))
    except (CommandError, SettingsError, CitizenKeyError) as error:
        print(f"Lỗi: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = ["FORMATS", "KINDS", "Period", "add_arguments", "build_tables", "main"]
