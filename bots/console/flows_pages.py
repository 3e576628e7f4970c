"""The console's flows pages: the flows each district uses, drawn as Mermaid diagrams in the
page, the live version and its `loa check` status; upload of a flows file and reload for admins
of a top-level organisation (bots.console.control.can_manage_flows).

    GET  /admin/kich-ban?district=SLUG   a district's flows as diagrams; the live version
    POST /admin/kich-ban/tai-len         multipart: file, target (which YAML file it replaces),
                                         action=check|apply — checked in a temporary copy of
                                         the whole bundle; nothing changes unless it passes
    POST /admin/kich-ban/ap-dung         reload the flows file(s) on disk now (bots/reload.py)
    GET  /admin/static/vendor/{name}     mermaid.min.js (vendored, docs in static/vendor/)

Diagrams are drawn in the browser by the vendored Mermaid from `flows.graph.mermaid` sources;
the page loads nothing from another origin. Mermaid puts a <style> element into each SVG, so
this page alone allows inline styles (scripts stay 'self' only).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from bots.console import audit, fmt
from bots.console.app import (
    CSP,
    HERE,
    VISITOR,
    _deps,
    _forbidden,
    _NotFound,
    client_ip,
    render,
)
from bots.console.control import (
    FlowsControl,
    can_manage_flows,
    flows_of_district,
    flows_of_districts,
    visible_districts,
)
from bots.flows_files import (
    Trial,
    bundle_sources,
    check_with,
    relative_names,
    write_atomically,
    yaml_files,
)
from flows.check import load_checked
from flows.problems import Problem

log = logging.getLogger("loa.console.flows")

MAX_UPLOAD = 1024 * 1024  # a flows file; the largest deployment's main file is ~40 KB
VENDOR = {"mermaid.min.js": "text/javascript"}
FLOWS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
FLOWS_UPLOADED = "flows_uploaded"
audit.LABELS.setdefault(FLOWS_UPLOADED, "Tải lên tệp kịch bản")
audit.LABELS.setdefault("flows_reloaded", "Áp dụng kịch bản mới")

_LOCATION = re.compile(r"^(.+?:\d+:\d+): (.*)$", re.S)


# -- what the pages show --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProblemLine:
    """One problem as the page shows it: where, what, and the hint."""

    where: str
    message: str
    hint: str = ""
    warning: bool = False

    @classmethod
    def of(cls, problem: Problem | str) -> ProblemLine:
        if isinstance(problem, Problem):
            where = f"{problem.file}:{problem.line}:{problem.column}"
            return cls(where, problem.message, problem.hint, not problem.is_error)
        text, _, hint = problem.partition("\n  gợi ý: ")
        found = _LOCATION.match(text)
        if found is None:
            return cls("", text, hint)
        message = found.group(2)
        warning = message.startswith("cảnh báo: ")
        return cls(found.group(1), message.removeprefix("cảnh báo: "), hint, warning)


@dataclass(frozen=True, slots=True)
class Diagram:
    id: str
    title: str
    campaign: str | None
    steps: int
    source: str | None  # None: the diagram could not be drawn


@dataclass(frozen=True, slots=True)
class LiveCheck:
    """The live version as `loa check` sees it (cached per version)."""

    version: str
    warnings: tuple[ProblemLine, ...]
    files: tuple[str, ...]
    diagrams: Mapping[str, Diagram]


@dataclass(frozen=True, slots=True)
class DiskCheck:
    """The flows files on disk now (an admin may have edited them since the last reload)."""

    version: str | None  # None: they do not pass check
    errors: tuple[ProblemLine, ...]
    warnings: tuple[ProblemLine, ...]
    targets: tuple[str, ...]  # YAML files an upload may replace, main first


@dataclass(slots=True)
class Outcome:
    """What an upload or a reload did, for the page."""

    ok: bool
    title: str
    lines: list[ProblemLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _relative(problem: Problem, base: Path) -> Problem:
    name = problem.file
    prefix = str(base).rstrip(os.sep) + os.sep
    if name.startswith(prefix):
        name = name[len(prefix):]
    elif not os.path.isabs(name):
        with contextlib.suppress(ValueError):
            name = os.path.relpath(Path(name).resolve(), base)
    return Problem(name, problem.line, problem.column, problem.message, problem.hint,
                   problem.severity)


def for_the_page(source: str) -> str:
    """The `loa graph` diagram as the page draws it: top to bottom (a page scrolls down, and a
    long form laid out sideways shrinks to nothing on a phone), and the first step marked in
    the console's blue rather than the "current state" red of a state machine drawing."""
    source = source.replace("direction LR", "direction TB", 1)
    return re.sub(r"classDef s_active [^\n]*", "classDef s_active fill:#e7f1fb,color:#0b3d73,"
                  "stroke:#0b5cad", source, count=1)


@lru_cache(maxsize=4)
def live_check(main: str, version: str) -> LiveCheck | None:
    """Check the archived main file of `version` and draw every flow (run in a thread)."""
    from flows.graph import mermaid

    loaded = load_checked(main)
    if loaded.bundle is None:
        return None
    base = loaded.base_dir
    diagrams: dict[str, Diagram] = {}
    for fid, flow in loaded.bundle.flows.items():
        try:
            source: str | None = for_the_page(mermaid(fid, flow))
        except Exception:  # one odd flow does not hide the others
            log.exception("no diagram for flow %s", fid)
            source = None
        diagrams[fid] = Diagram(fid, flow.title or fid, flow.campaign, len(flow.steps), source)
    warnings = tuple(ProblemLine.of(_relative(p, base)) for p in loaded.problems
                     if not p.is_error)
    return LiveCheck(version, warnings, tuple(relative_names(loaded.files, base)), diagrams)


_disk: dict[Path, tuple[tuple[Any, ...], DiskCheck]] = {}


def disk_check(config: Path) -> DiskCheck:
    """`loa check` of the files on disk, again only when one of them changed (thread)."""
    config = config.resolve()
    stamp: list[Any] = []
    for path in bundle_sources(config):
        try:
            info = path.stat()
        except OSError:
            continue
        stamp.append((str(path), info.st_mtime_ns, info.st_size))
    key = tuple(stamp)
    cached = _disk.get(config)
    if cached is not None and cached[0] == key:
        return cached[1]
    base = config.parent
    loaded = load_checked(config)
    problems = [_relative(p, base) for p in loaded.problems]
    found = DiskCheck(
        version=loaded.content_hash if loaded.bundle is not None else None,
        errors=tuple(ProblemLine.of(p) for p in problems if p.is_error),
        warnings=tuple(ProblemLine.of(p) for p in problems if not p.is_error),
        targets=tuple(relative_names(yaml_files(config), base)),
    )
    _disk[config] = (key, found)
    return found


# -- pages ----------------------------------------------------------------------------------------


def _control(request: web.Request) -> FlowsControl | None:
    control: FlowsControl | None = getattr(_deps(request), "flows_control", None)
    return control


def _by(actor: str) -> str:
    return {
        "start": "khởi động máy chủ",
        "cli": "lệnh loa reload",
        "signal": "tín hiệu SIGHUP",
        "system": "hệ thống",
    }.get(actor, "bảng điều khiển" if actor.startswith("organiser:") else actor)


async def flows_page(
    request: web.Request, *, outcome: Outcome | None = None, status: int = 200,
) -> web.StreamResponse:
    visitor = request[VISITOR]
    bundle = visitor.bundle
    control = _control(request)
    manage = can_manage_flows(visitor.organiser, visitor.tree)
    districts = list(bundle.districts) if manage else visible_districts(
        visitor.organiser, visitor.tree, bundle)
    asked = request.query.get("district", "")
    if asked and asked not in districts:
        raise _NotFound()
    chosen = asked or (districts[0] if districts else "")
    live: LiveCheck | None = None
    main = control.main_file() if control is not None else None
    if control is not None and main is not None:
        live = await asyncio.to_thread(live_check, str(main), control.version)
    flow_ids = flows_of_district(bundle, chosen) if chosen else []
    diagrams = [live.diagrams[f] for f in flow_ids if live is not None and f in live.diagrams]
    unused: list[Diagram] = []
    if manage and live is not None:
        used = set(flows_of_districts(bundle, bundle.districts))
        unused = [d for fid, d in live.diagrams.items() if fid not in used]
    disk: DiskCheck | None = None
    if manage and control is not None:
        disk = await asyncio.to_thread(disk_check, control.config)
    campaigns = {slug: c.title for slug, c in bundle.campaigns.items()}
    response = render(
        request, "flows.html", status=status,
        active_page="flows",
        control=control,
        live=live,
        manage=manage,
        districts=[(slug, bundle.districts[slug].name) for slug in districts],
        chosen=chosen,
        diagrams=diagrams,
        unused=unused,
        disk=disk,
        outcome=outcome,
        campaigns=campaigns,
        max_upload=f"{MAX_UPLOAD // (1024 * 1024)} MB",
        local=fmt.local,
        by=_by,
    )
    response.headers["Content-Security-Policy"] = FLOWS_CSP
    return response


async def flows(request: web.Request) -> web.StreamResponse:
    return await flows_page(request)


def _refused(request: web.Request) -> web.Response:
    return _forbidden(request, "Chỉ tài khoản quản trị của đơn vị cấp cao nhất mới tải lên hay "
                               "áp dụng kịch bản (kịch bản dùng chung cho mọi đơn vị).")


async def _reload(request: web.Request, control: FlowsControl, title: str) -> Outcome:
    visitor = request[VISITOR]
    result = await control.reload(actor=audit.actor_of(visitor.organiser))
    if not result.ok:
        return Outcome(False, "Kịch bản mới chưa được áp dụng: còn lỗi. Phiên bản đang chạy giữ "
                              "nguyên.", [ProblemLine.of(p) for p in result.problems])
    if result.changed:
        return Outcome(True, f"{title} Phiên bản {result.version[:12]} đang chạy trên mọi máy "
                             "chủ; ai đang trả lời dở vẫn tiếp tục theo phiên bản cũ.",
                       notes=list(result.notes))
    return Outcome(True, f"Kịch bản trên máy chủ không đổi: phiên bản {result.version[:12]} "
                         "vẫn đang chạy.", notes=list(result.notes))


async def flows_reload(request: web.Request) -> web.StreamResponse:
    visitor = request[VISITOR]
    control = _control(request)
    if not can_manage_flows(visitor.organiser, visitor.tree):
        return _refused(request)
    if control is None:
        return _forbidden(request, "Máy chủ này không cho tải lại kịch bản từ bảng điều khiển.")
    outcome = await _reload(request, control, "Đã áp dụng.")
    return await flows_page(request, outcome=outcome, status=200 if outcome.ok else 400)


async def flows_upload(request: web.Request) -> web.StreamResponse:
    visitor = request[VISITOR]
    deps = _deps(request)
    control = _control(request)
    if not can_manage_flows(visitor.organiser, visitor.tree):
        return _refused(request)
    if control is None:
        return _forbidden(request, "Máy chủ này không cho tải kịch bản lên từ bảng điều khiển.")
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, FileField) or not upload.filename:
        return await flows_page(request, status=400, outcome=Outcome(
            False, "Bạn chưa chọn tệp kịch bản (.yaml) để tải lên."))
    data = upload.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        return await flows_page(request, status=413, outcome=Outcome(
            False, f"Tệp lớn quá: tối đa {MAX_UPLOAD // (1024 * 1024)} MB. Tách bớt sang các tệp "
                   "include rồi tải từng tệp."))
    config = control.config.resolve()
    base = config.parent
    targets = relative_names(await asyncio.to_thread(yaml_files, config), base)
    target = str(form.get("target") or (targets[0] if targets else ""))
    if target not in targets:
        return await flows_page(request, status=400, outcome=Outcome(
            False, f"Tệp '{target}' không thuộc bộ kịch bản đang dùng."))
    path = (base / target).resolve()
    validate = getattr(control, "validate", None)
    trial: Trial = await asyncio.to_thread(check_with, config, {path: data}, validate)
    shown = upload.filename[:120]
    if not trial.ok:
        return await flows_page(request, status=400, outcome=Outcome(
            False, f"Tệp {shown} chưa hợp lệ nên chưa thay {target}; không có gì thay đổi. "
                   "Sửa các lỗi dưới đây rồi tải lên lại.",
            [ProblemLine.of(p) for p in (*trial.errors, *trial.warnings)]))
    warnings = [ProblemLine.of(p) for p in trial.warnings]
    if form.get("action") != "apply":
        return await flows_page(request, outcome=Outcome(
            True, f"Tệp {shown} hợp lệ (chưa áp dụng). Bấm “Kiểm tra và áp dụng” để thay "
                  f"{target}.", warnings))
    old = await asyncio.to_thread(path.read_bytes)
    await asyncio.to_thread(write_atomically, path, data)
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        audit.record(session, visitor.organiser, FLOWS_UPLOADED, now, ip=client_ip(request),
                     file=target, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    outcome = await _reload(request, control, f"Đã thay {target}.")
    if not outcome.ok:  # something else changed meanwhile: the file goes back as it was
        await asyncio.to_thread(write_atomically, path, old)
        outcome.title = (f"Chưa thay {target}: bộ kịch bản không tải lại được, tệp cũ đã được "
                         "đặt lại. Phiên bản đang chạy giữ nguyên.")
    outcome.lines = [*outcome.lines, *warnings]
    return await flows_page(request, outcome=outcome, status=200 if outcome.ok else 400)


async def vendor(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kind = VENDOR.get(name)
    if kind is None:
        raise _NotFound()
    return web.FileResponse(
        HERE / "static" / "vendor" / name,
        headers={"Content-Type": f"{kind}; charset=utf-8", "Cache-Control": "no-cache"},
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/kich-ban", flows, name="flows")
    router.add_post("/kich-ban/tai-len", flows_upload, name="flows_upload")
    router.add_post("/kich-ban/ap-dung", flows_reload, name="flows_reload")
    router.add_get("/static/vendor/{name}", vendor, name="vendor")


__all__ = ["FLOWS_CSP", "MAX_UPLOAD", "add_routes", "disk_check", "live_check"]
