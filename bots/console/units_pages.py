"""The console's units import: what `loa units import` does, for admins, from a form.

    GET  /admin/don-vi        the form: organisation (inside the admin's subtree), file,
                              keep units not in the file, check only / check and apply
    POST /admin/don-vi        multipart; every problem by the row (and column) of the file;
                              applied = the units CSV written and the flows reloaded

An admin of a district imports its own units (they are its data); the reload that follows
applies the deployment's files as they are on disk, checked first. Other roles: 403; an
organisation outside the admin's subtree: 404.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.web_request import FileField

from bots.console import audit
from bots.console.access import can_manage_accounts, manageable
from bots.console.app import VISITOR, Visitor, _deps, _forbidden, _NotFound, client_ip, render
from bots.console.control import FlowsControl
from bots.console.flows_pages import Outcome, ProblemLine
from bots.units_import import MAX_BYTES, ImportOutcome, UnitsImportError, import_units, summary

log = logging.getLogger("loa.console.units")

UNITS_IMPORTED = "units_imported"
audit.LABELS.setdefault(UNITS_IMPORTED, "Nhập danh sách đơn vị")


def _choices(visitor: Visitor) -> list[tuple[str, str, int]]:
    org = visitor.organiser.org
    base = visitor.tree.nodes[org].depth if org in visitor.tree else 0
    return [(n.slug, n.name, n.depth - base) for n in visitor.tree.walk(org)]


async def units_page(
    request: web.Request, *, result: ImportOutcome | None = None, outcome: Outcome | None = None,
    status: int = 200, chosen: str = "",
) -> web.StreamResponse:
    visitor = request[VISITOR]
    if not can_manage_accounts(visitor.role):
        return _forbidden(request, "Chỉ tài khoản quản trị mới nhập danh sách đơn vị.")
    choices = _choices(visitor)
    default = next((slug for slug, _, _ in choices if slug in visitor.bundle.districts), "")
    return render(
        request, "units.html", status=status, active_page="units", choices=choices,
        chosen=chosen or default, result=result, outcome=outcome,
        summary=summary(result) if result is not None else [],
        max_upload=MAX_BYTES // 1024 // 1024,
        enabled=getattr(_deps(request), "flows_control", None) is not None,
    )


async def units(request: web.Request) -> web.StreamResponse:
    return await units_page(request)


async def units_post(request: web.Request) -> web.StreamResponse:
    visitor = request[VISITOR]
    deps = _deps(request)
    if not can_manage_accounts(visitor.role):
        return _forbidden(request, "Chỉ tài khoản quản trị mới nhập danh sách đơn vị.")
    control: FlowsControl | None = getattr(deps, "flows_control", None)
    if control is None:
        return _forbidden(request, "Máy chủ này không cho nhập đơn vị từ bảng điều khiển.")
    form = await request.post()
    org = str(form.get("org") or "")
    if not manageable(visitor.organiser, org, visitor.tree):
        raise _NotFound()
    upload = form.get("file")
    if not isinstance(upload, FileField) or not upload.filename:
        return await units_page(request, status=400, chosen=org, outcome=Outcome(
            False, "Bạn chưa chọn tệp danh sách (.xlsx hoặc .csv)."))
    data = upload.file.read(MAX_BYTES + 1)
    apply = form.get("action") == "apply"
    try:
        result = await asyncio.to_thread(
            import_units, control.config, org, data, upload.filename, merge=bool(form.get("merge")),
            write=apply,
        )
    except UnitsImportError as error:
        return await units_page(request, status=400, chosen=org, outcome=Outcome(
            False, "Chưa nhập được danh sách.", [ProblemLine("", p) for p in error.problems]))
    if not result.ok:
        return await units_page(request, status=400, chosen=org, result=result, outcome=Outcome(
            False, "Danh sách còn lỗi nên chưa ghi gì. Sửa các dòng dưới đây rồi tải lên lại.",
            [ProblemLine("", p) for p in result.problems]))
    outcome: Outcome | None = None
    if result.written:
        now = deps.clock()
        async with deps.database().sessions() as session, session.begin():
            audit.record(session, visitor.organiser, UNITS_IMPORTED, now, ip=client_ip(request),
                         org=org, rows=len(result.rows), added=len(result.added),
                         changed=len(result.changed), removed=len(result.removed))
        reloaded = await control.reload(actor=audit.actor_of(visitor.organiser))
        if reloaded.ok:
            outcome = Outcome(True, f"Đã áp dụng danh sách mới (phiên bản "
                                    f"{reloaded.version[:12]}).", notes=list(reloaded.notes))
        else:
            outcome = Outcome(False, "Đã ghi danh sách nhưng bộ kịch bản chưa tải lại được; "
                                     "phiên bản đang chạy giữ nguyên.",
                              [ProblemLine.of(p) for p in reloaded.problems])
    return await units_page(request, chosen=org, result=result, outcome=outcome)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/don-vi", units, name="units")
    router.add_post("/don-vi", units_post, name="units_post")


__all__ = ["add_routes"]
