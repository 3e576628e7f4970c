"""District-level notices: what Loa tells a district's organisers without a participant to
file it under — the channel health check (a Page Meta unsubscribed, a failing Telegram or Zalo
Bot webhook, a Zalo OA never authorised), the Zalo token keeper's re-authorisation request, a
final delivery failure to someone the records do not know, the operations service (disk).

    GET  /admin/thong-bao                   the open notices of the visitor's subtree
    POST /admin/thong-bao/{id}/da-xu-ly     mark one handled (admins and organisers; audited)

and a middleware that counts them for every signed-in page (the banner and the menu badge in
base.html).

Who sees a notice of district D: an account whose subtree holds D (D's own organisers, a
province above D). Not a sibling district, and not an account rooted below D (a ward, a
reviewer limited to units): the notice has no participant, hence no unit that would bring it
into such a scope (`Scope.allows(D, None)`). Anything else answers 404, as everywhere in the
console. Notices tied to a participant stay on that participant's page.

A notice closed by its source (the health check finding the channel working again, the token
keeper after a new authorisation) simply leaves the list. A channel notice marked handled while
the problem lasts is opened again by the next check (bots/channel_health.py).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web
from markupsafe import Markup, escape
from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bots.console import audit, fmt
from bots.console.access import can_take_over, roots_of
from bots.console.app import (
    OPEN_NOTICES,
    VISITOR,
    Visitor,
    _deps,
    _forbidden,
    _id,
    _NotFound,
    _redirect,
    _url,
    client_ip,
    render,
)
from bots.console.tree import OrgTree
from bots.records.models import NotificationKind, Organiser, OrganiserNotification

NOTICE_HANDLED = "notice_handled"
LIMIT = 200  # newest shown; a longer list says how many more there are

KIND_LABELS = {
    NotificationKind.CHANNEL: "Sự cố kênh",
    NotificationKind.REAUTHORISE: "Cần cấp quyền lại",
    NotificationKind.UNDELIVERED: "Tin nhắn không gửi được",
    NotificationKind.NOTIFY: "Thông báo",
    NotificationKind.HANDOVER: "Cần gặp cán bộ",
}
KIND_CLASSES = {
    NotificationKind.CHANNEL: "warn",
    NotificationKind.REAUTHORISE: "bad",
    NotificationKind.UNDELIVERED: "bad",
    NotificationKind.HANDOVER: "human",
}
# Kinds whose source closes the notice itself once the problem is gone.
SELF_CLOSING = {
    NotificationKind.CHANNEL: (
        "Loa tự đóng thông báo này khi lần kiểm tra sau thấy kênh đã hoạt động lại."
    ),
    NotificationKind.REAUTHORISE: (
        "Loa tự đóng thông báo này khi quản trị viên OA cấp quyền lại xong."
    ),
}
# Routes that answer a file, never a page: no banner, so no count to make.
FILE_ROUTES = frozenset({
    "evidence_file", "export", "reports_xlsx", "reports_csv", "certificate_file", "vendor",
})


def notice_districts(organiser: Organiser, tree: OrgTree) -> frozenset[str]:
    """The districts whose district-level notices this account sees (module docstring)."""
    nodes: set[str] = set()
    for root in roots_of(organiser, tree):
        nodes |= tree.subtree(root)
    return frozenset(nodes)


def _open() -> ColumnElement[bool]:
    """Open and tied to no participant."""
    return and_(
        OrganiserNotification.participant_id.is_(None),
        OrganiserNotification.handled_at.is_(None),
    )


async def _open_by_district(session: AsyncSession, visible: frozenset[str]) -> dict[str, int]:
    """Open district-level notices per visible district. Grouped in SQL and filtered here:
    few districts have open notices, while a subtree may hold thousands of units."""
    rows = (await session.execute(
        select(OrganiserNotification.district, func.count())
        .where(_open())
        .group_by(OrganiserNotification.district)
    )).all()
    return {district: int(count) for district, count in rows if district in visible}


async def open_count(session: AsyncSession, organiser: Organiser, tree: OrgTree) -> int:
    visible = notice_districts(organiser, tree)
    if not visible:
        return 0
    return sum((await _open_by_district(session, visible)).values())


async def open_notices(
    session: AsyncSession, organiser: Organiser, tree: OrgTree, limit: int = LIMIT
) -> tuple[list[OrganiserNotification], int]:
    """The newest open notices the account sees, and how many there are in all."""
    by_district = await _open_by_district(session, notice_districts(organiser, tree))
    if not by_district:
        return [], 0
    rows = (await session.scalars(
        select(OrganiserNotification)
        .where(_open(), OrganiserNotification.district.in_(sorted(by_district)))
        .order_by(OrganiserNotification.created_at.desc(), OrganiserNotification.id.desc())
        .limit(limit)
    )).all()
    return list(rows), sum(by_district.values())


@web.middleware
async def count_open(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Put the visitor's open notice count on the request for `render` (after
    authentication: a signed-out request has no visitor)."""
    visitor = request.get(VISITOR)
    if visitor is not None and request.match_info.route.name not in FILE_ROUTES:
        async with _deps(request).database().reads() as session:
            request[OPEN_NOTICES] = await open_count(session, visitor.organiser, visitor.tree)
    return await handler(request)


_CODE = re.compile(r"`([^`\n]+)`")


def with_code(text: str) -> Markup:
    """The notice's text, escaped, with `command` spans as <code> (the texts quote commands
    such as `loa webhook set`)."""
    return Markup(_CODE.sub(lambda m: f"<code>{m.group(1)}</code>", str(escape(text))))


def _district_name(visitor: Visitor, slug: str) -> str:
    return visitor.bundle.unit_names.get(slug) or visitor.tree.name(slug)


async def notices_page(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    now = deps.clock()
    async with deps.database().reads() as session:
        rows, total = await open_notices(session, visitor.organiser, visitor.tree)
    return render(
        request, "notices.html",
        active_page="notices",
        notices=rows,
        total=total,
        done=request.query.get("done", ""),
        can_handle=can_take_over(visitor.role),
        district_name=lambda slug: _district_name(visitor, slug),
        kind_label=lambda kind: KIND_LABELS.get(kind, "Thông báo"),
        kind_class=lambda kind: KIND_CLASSES.get(kind, ""),
        self_closing=SELF_CLOSING,
        with_code=with_code,
        local=fmt.local,
        ago=lambda moment: fmt.ago(moment, now),
    )


async def mark_handled(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    notice_id = _id(request)
    now: datetime = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        notice = await session.get(OrganiserNotification, notice_id)
        if (
            notice is None
            or notice.participant_id is not None  # on its participant's page, not here
            or notice.district not in notice_districts(visitor.organiser, visitor.tree)
        ):
            raise _NotFound()
        if not can_take_over(visitor.role):
            return _forbidden(request, "Tài khoản người chấm không đánh dấu xử lý thông báo "
                                       "được; hãy báo cán bộ phụ trách.")
        result = await session.execute(
            update(OrganiserNotification)
            .where(OrganiserNotification.id == notice_id,
                   OrganiserNotification.handled_at.is_(None))
            .values(handled_at=now)
            .execution_options(synchronize_session=False)
        )
        changed = bool(getattr(result, "rowcount", 0))
        if changed:  # closed meanwhile by its source or another organiser: nothing to audit
            audit.record(session, visitor.organiser, NOTICE_HANDLED, now, ip=client_ip(request),
                         notice=notice_id, kind=notice.kind.value, district=notice.district)
    raise _redirect(_url(request, "notices", {"done": "handled" if changed else "already"}))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/thong-bao", notices_page, name="notices")
    router.add_post(r"/thong-bao/{id}/da-xu-ly", mark_handled, name="notice_handled")


__all__ = [
    "FILE_ROUTES",
    "KIND_LABELS",
    "NOTICE_HANDLED",
    "add_routes",
    "count_open",
    "mark_handled",
    "notice_districts",
    "notices_page",
    "open_count",
    "open_notices",
    "with_code",
]
