"""The organiser console: an aiohttp sub-application mounted at /admin.

    GET  /admin/login, POST /admin/login      sign in (rate-limited), POST /admin/logout
    GET  /admin/                              review queue (filters: campaign, wave, unit,
                                              status, age; sort by messaging window or age)
    GET  /admin/export.csv                    the filtered queue as CSV (organisers, admins)
    GET  /admin/submissions/{id}              one submission: evidence, decisions, duplicates
    POST /admin/submissions/{id}/accept-all   accept every pending item
    POST /admin/evidence/{id}/decision        accept or reject one item (reason)
    GET  /admin/evidence/{id}/file            the evidence file (private, no-store, audited)
    GET  /admin/participants/{id}             a participant, their channels and submissions
    POST /admin/participants/{id}/take|release|message   hand-over
    GET  /admin/handovers                     conversations paused for a human
    GET  /admin/thong-bao, POST .../{id}/da-xu-ly   district-level notices (channel health...)
    GET  /admin/audit                         the audit log (admins)
    GET  /admin/organisers, POST ...          accounts of the admin's subtree (admins)
    GET, POST /admin/password                 change one's password
    GET  /admin/static/{name}                 console.css, console.js

Every route but login and static needs a session (else a redirect to the login page), every
POST a CSRF token (else 403), and everything of another subtree answers 404 (bots.console.access).
Pages are Jinja2 templates with autoescaping; no external resource is ever loaded.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web
from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import func, select

from bots.console import audit, auth, fmt
from bots.console import certificates as certs
from bots.console import duplicates as dups
from bots.console import handover as hand
from bots.console import review as rv
from bots.console.access import (
    Access,
    can_export,
    can_manage_accounts,
    can_take_over,
    manageable,
    roots_of,
    unit_of,
)
from bots.console.tree import OrgTree
from bots.console.windows import closes_at

if TYPE_CHECKING:
    from bots.console.control import FlowsControl
from bots.records.db import Database
from bots.records.files import BadHash, FileStore
from bots.records.models import (
    ChannelIdentity,
    NotificationKind,
    Organiser,
    OrganiserNotification,
    OrganiserRole,
    OrganiserSession,
    Participant,
    ReviewDecision,
    Submission,
)
from flows.compiler import CompiledBundle
from flows.schema import ExpectKind
from flows.vocab import ConversationKey, Inbound, Outbound

log = logging.getLogger("loa.console")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = {"console.css": "text/css", "console.js": "text/javascript", "pages.css": "text/css",
          "flows.js": "text/javascript"}
COOKIE = "loa_admin"
LOGIN_CSRF_COOKIE = "loa_admin_login"
CSRF_FIELD = "csrf"
PUBLIC_ROUTES = frozenset({"login", "login_post", "static"})
PASSWORD_ROUTES = frozenset({"password", "password_post", "logout"})
MAX_ID = 2**62
EXPORT_LIMIT = 50_000

CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

ROLE_NAMES = {
    OrganiserRole.ADMIN: "Quản trị",
    OrganiserRole.ORGANISER: "Cán bộ phụ trách",
    OrganiserRole.REVIEWER: "Người chấm",
}
FIELD_NAMES = {
    "ho_ten": "Họ và tên",
    "ho_va_ten": "Họ và tên",
    "email": "Email",
    "so_dien_thoai": "Số điện thoại",
    "don_vi": "Đơn vị",
    "chuc_vu": "Chức vụ Đoàn",
    "dong_y": "Đồng ý cung cấp thông tin",
}
QUICK_REASONS = (
    "Ảnh bị mờ, không đọc được",
    "Chưa đúng màn hình theo ảnh mẫu",
    "Ảnh bị cắt, thiếu thông tin",
    "Thông tin không khớp với người đăng ký",
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ConsoleDeps:
    """What the console needs from the runtime.

    `notify` enters a SYSTEM `Inbound` into its conversation's inbox (the pipeline's
    `ingest`); `send` puts an organiser's message into a conversation's outbox (None: the
    console offers no messaging). `flows` and `tree` return the current compiled bundle and
    organisation tree (they may change on reload)."""

    db: Database | Callable[[], Database]  # or a function: mounted before the runtime starts
    files: FileStore | Callable[[], FileStore]
    flows: Callable[[], CompiledBundle]
    tree: Callable[[], OrgTree]
    notify: Callable[[Inbound], Awaitable[Any]]
    send: Callable[[ConversationKey, Outbound], Awaitable[Any]] | None = None
    secure_cookies: bool = False  # LOA_PUBLIC_URL is https
    handover_timeout: timedelta = hand.DEFAULT_TIMEOUT  # LOA_HANDOVER_TIMEOUT
    trust_forwarded: bool = False  # take the client address from X-Forwarded-For
    sessions: auth.SessionPolicy = field(default_factory=auth.SessionPolicy)
    rate_limit: auth.RateLimit = field(default_factory=auth.RateLimit)
    clock: Callable[[], datetime] = _utcnow
    page_size: int = 30
    # The deployment's flows (live version, upload, reload: bots/console/control.py); None: the
    # flows pages show no diagrams and offer no upload, reload or units import.
    flows_control: FlowsControl | None = None

    def database(self) -> Database:
        return self.db if isinstance(self.db, Database) else self.db()

    def file_store(self) -> FileStore:
        return self.files if isinstance(self.files, FileStore) else self.files()


DEPS: web.AppKey[ConsoleDeps] = web.AppKey("console_deps", ConsoleDeps)
JINJA: web.AppKey[Environment] = web.AppKey("console_jinja", Environment)


@dataclass(slots=True)
class Visitor:
    """The signed-in organiser of a request."""

    organiser: Organiser
    login_id: int
    token: str
    csrf: str
    access: Access
    tree: OrgTree
    bundle: CompiledBundle

    @property
    def role(self) -> OrganiserRole:
        return self.organiser.role


VISITOR: web.RequestKey[Visitor] = web.RequestKey("console_visitor", Visitor)
# Open district-level notices the visitor sees (bots/console/notices.py): the banner's count.
OPEN_NOTICES: web.RequestKey[int] = web.RequestKey("console_open_notices", int)


# -- helpers ------------------------------------------------------------------------------------


def _deps(request: web.Request) -> ConsoleDeps:
    return request.app[DEPS]


def _url(
    request: web.Request, route: str, query: dict[str, str] | None = None, /, **parts: Any
) -> str:
    url = str(request.app.router[route].url_for(**{k: str(v) for k, v in parts.items()}))
    if query:
        url += "?" + urlencode(query)
    return url


def _base(request: web.Request) -> str:
    """The console's own path prefix ("/admin"), for the cookie path."""
    return _url(request, "queue").rstrip("/") or "/"


def client_ip(request: web.Request) -> str:
    if _deps(request).trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return first[:64]
    return (request.remote or "unknown")[:64]


def _id(request: web.Request) -> int:
    raw = request.match_info.get("id", "")
    if not raw.isdigit() or len(raw) > 18 or int(raw) > MAX_ID:
        raise _NotFound()
    return int(raw)


class _NotFound(Exception):
    """Answer 404 with the console's page (raised anywhere in a handler)."""


def render(
    request: web.Request, template: str, status: int = 200, **context: Any
) -> web.Response:
    env = request.app[JINJA]
    visitor = request.get(VISITOR)
    now = _deps(request).clock()

    def url(route: str, query: dict[str, str] | None = None, /, **parts: Any) -> str:
        return _url(request, route, query, **parts)

    login_csrf = context.pop("login_csrf", "")
    html = env.get_template(template).render(
        url=url,
        visitor=visitor,
        csrf=visitor.csrf if visitor is not None else login_csrf,
        now=now,
        open_notices=request.get(OPEN_NOTICES, 0),
        roles=ROLE_NAMES,
        can_take_over=can_take_over,
        can_export=can_export,
        can_manage_accounts=can_manage_accounts,
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _not_found(request: web.Request) -> web.Response:
    return render(request, "message.html", status=404, title="Không tìm thấy",
                  text="Trang bạn mở không có hoặc bạn không có quyền xem.")


def _forbidden(request: web.Request, text: str) -> web.Response:
    return render(request, "message.html", status=403, title="Không có quyền", text=text)


def _redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


async def _form(request: web.Request) -> dict[str, str]:
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


# -- middlewares --------------------------------------------------------------------------------


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except _NotFound:
        response = _not_found(request)
    except web.HTTPNotFound:
        response = _not_found(request)
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    # Pages show personal data: never kept by the browser or a proxy.
    headers.setdefault("Cache-Control", "private, no-store")
    return response


@web.middleware
async def _authenticate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    route = request.match_info.route.name
    if route in PUBLIC_ROUTES or route is None:
        return await handler(request)
    deps = _deps(request)
    now = deps.clock()
    token = request.cookies.get(COOKIE, "")
    found = await auth.find_session(deps.database(), token, now, deps.sessions) if token else None
    if found is None:
        target = request.path_qs if request.method == "GET" else _url(request, "queue")
        raise _redirect(_url(request, "login", {"next": target}))
    login, organiser = found
    csrf = auth.csrf_for(token)
    if request.method not in ("GET", "HEAD"):
        given = request.headers.get("X-CSRF-Token")
        if given is None:
            given = (await _form(request)).get(CSRF_FIELD)
        if not auth.same_token(csrf, given):
            return web.Response(
                status=403,
                text="Phiên làm việc đã thay đổi; hãy tải lại trang rồi thử lại.",
                content_type="text/plain",
                charset="utf-8",
            )
    bundle = deps.flows()
    tree = deps.tree()
    request[VISITOR] = Visitor(
        organiser, login.id, token, csrf, Access.of(organiser, tree, bundle), tree, bundle
    )
    if organiser.must_change_password and route not in PASSWORD_ROUTES:
        raise _redirect(_url(request, "password"))
    return await handler(request)


# -- login --------------------------------------------------------------------------------------


def _safe_next(request: web.Request, target: str | None) -> str:
    base = _base(request)
    if (
        target
        and target.startswith(base + "/")
        and not target.startswith("//")
        and "\\" not in target
        and "\n" not in target
        and "\r" not in target
    ):
        return target
    return _url(request, "queue")


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
                max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        path=_base(request),
        max_age=max_age,
        httponly=True,
        secure=_deps(request).secure_cookies,
        samesite="Lax",
    )


async def login_page(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    token = request.cookies.get(COOKIE, "")
    if token and await auth.find_session(deps.database(), token, deps.clock(), deps.sessions):
        raise _redirect(_safe_next(request, request.query.get("next")))
    return _login_form(request, request.query.get("next", ""))


def _login_form(
    request: web.Request, next_url: str, error: str = "", status: int = 200, login: str = ""
) -> web.Response:
    pre = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if len(pre) < 20:
        pre = auth.generate_password(4, 8)
    response = render(request, "login.html", status=status, login_csrf=pre, error=error,
                      next_url=next_url, login=login)
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, pre, None)
    return response


async def login_post(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    form = await _form(request)
    if not auth.same_token(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get(CSRF_FIELD)):
        return web.Response(status=403, text="Trang đăng nhập đã cũ; hãy tải lại trang.",
                            content_type="text/plain", charset="utf-8")
    login = auth.normal_login(form.get("login", ""))[:320]
    password = form.get("password", "")
    next_url = form.get("next", "")
    ip = client_ip(request)
    now = deps.clock()
    if not login or not password:
        return _login_form(request, next_url, "Hãy nhập email và mật khẩu.", 400, login)
    async with deps.database().reads() as session:
        wait = await auth.blocked_for(session, login, ip, now, deps.rate_limit)
        organiser = await session.scalar(
            select(Organiser).where(Organiser.login == login, Organiser.active.is_(True))
        )
    if wait is not None:
        minutes = max(1, int(wait.total_seconds() + 59) // 60)
        return _login_form(
            request, next_url,
            f"Đăng nhập sai quá nhiều lần. Bạn thử lại sau {minutes} phút nhé.", 429, login,
        )
    ok = await auth.check_password_async(
        organiser.password_hash if organiser is not None else None, password
    )
    async with deps.database().sessions() as session, session.begin():
        auth.record_attempt(session, login, ip, now, ok)
        if not ok or organiser is None:
            return _login_form(request, next_url, "Email hoặc mật khẩu không đúng.", 401, login)
        organiser = await session.get(Organiser, organiser.id)
        assert organiser is not None
        if auth.needs_rehash(organiser.password_hash):
            organiser.password_hash = await auth.hash_password_async(password)
        token = await auth.open_session(
            session, organiser, now, deps.sessions, ip=ip,
            user_agent=request.headers.get("User-Agent"),
        )
        audit.record(session, organiser, audit.LOGIN, now, ip=ip)
    response = _redirect(_safe_next(request, next_url))
    _set_cookie(request, response, COOKIE, token, int(deps.sessions.absolute.total_seconds()))
    response.del_cookie(LOGIN_CSRF_COOKIE, path=_base(request))
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        await auth.revoke_session(session, visitor.login_id, now)
        audit.record(session, visitor.organiser, audit.LOGOUT, now, ip=client_ip(request))
    response = _redirect(_url(request, "login"))
    response.del_cookie(COOKIE, path=_base(request))
    raise response


async def password_page(request: web.Request) -> web.StreamResponse:
    return render(request, "password.html", error="", done=request.query.get("done") == "1")


async def password_post(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    form = await _form(request)
    current, new, again = form.get("current", ""), form.get("new", ""), form.get("again", "")
    organiser = visitor.organiser
    error = ""
    if not await auth.check_password_async(organiser.password_hash, current):
        error = "Mật khẩu hiện tại không đúng."
    elif new != again:
        error = "Hai lần nhập mật khẩu mới không giống nhau."
    elif new == current:
        error = "Mật khẩu mới cần khác mật khẩu cũ."
    else:
        error = auth.password_problem(new, organiser.login) or ""
    if error:
        return render(request, "password.html", status=400, error=error, done=False)
    hashed = await auth.hash_password_async(new)
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        fresh = await session.get(Organiser, organiser.id)
        assert fresh is not None
        await auth.set_password(session, fresh, hashed, now, keep_session=visitor.login_id)
        audit.record(session, fresh, audit.PASSWORD_CHANGED, now, ip=client_ip(request))
    raise _redirect(_url(request, "password", {"done": "1"}))


# -- the queue ----------------------------------------------------------------------------------


def _unit_choices(visitor: Visitor) -> list[tuple[str, str, int]]:
    """(slug, name, depth) of every node the visitor may filter by."""
    out: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    for root in roots_of(visitor.organiser, visitor.tree):
        base = visitor.tree.nodes[root].depth if root in visitor.tree else 0
        for node in visitor.tree.walk(root):
            if node.slug not in seen:
                seen.add(node.slug)
                out.append((node.slug, node.name, node.depth - base))
    return out


def _unit_name(visitor: Visitor, slug: str | None) -> str:
    if not slug:
        return ""
    return visitor.bundle.unit_names.get(slug) or visitor.tree.name(slug)


async def queue(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    flt = rv.QueueFilter.parse(request.query)
    units = _unit_choices(visitor)
    if flt.unit and flt.unit not in {u[0] for u in units}:
        flt = rv.QueueFilter(**{**_asdict(flt), "unit": ""})
    if flt.campaign and flt.campaign not in visitor.bundle.campaigns:
        flt = rv.QueueFilter(**{**_asdict(flt), "campaign": "", "wave": ""})
    now = deps.clock()
    async with deps.database().reads() as session:
        order = await rv.queue_order(session, visitor.access, visitor.tree, visitor.bundle, flt,
                                     now)
        size = deps.page_size
        pages = max(1, (len(order) + size - 1) // size)
        page = min(flt.page, pages)
        entries = order[(page - 1) * size : page * size]
        await rv.fill_entries(session, entries, visitor.bundle)
        flags = await dups.flagged(session, visitor.access, [e.submission_id for e in entries])
        waiting = await _waiting_handovers(session, visitor)
    campaigns = [(slug, c.title) for slug, c in visitor.bundle.campaigns.items()]
    waves: list[str] = []
    if flt.campaign:
        waves = [w.name for w in visitor.bundle.campaigns[flt.campaign].waves]
    return render(
        request,
        "queue.html",
        flt=flt,
        entries=entries,
        total=len(order),
        page=page,
        pages=pages,
        campaigns=campaigns,
        waves=waves,
        units=units,
        statuses=rv.STATUSES,
        ages=rv.AGES,
        sorts=rv.SORTS,
        flags=flags,
        reasons=dups.REASONS,
        waiting=waiting,
        unit_name=lambda slug: _unit_name(visitor, slug),
        campaign_title=lambda slug: rv.campaign_title(visitor.bundle, slug),
        window_text=lambda e: fmt.window_text(e.window, e.channel, now),
        urgency=lambda e: fmt.window_urgency(e.window, now),
        ago=lambda m: fmt.ago(m, now),
        local=fmt.local,
        iso=fmt.iso,
    )


def _asdict(flt: rv.QueueFilter) -> dict[str, Any]:
    return {name: getattr(flt, name) for name in rv.QueueFilter.__dataclass_fields__}


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A cell starting like a formula would run in a spreadsheet (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def export(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    if not can_export(visitor.role):
        return _forbidden(request, "Tài khoản người chấm không xuất được danh sách.")
    flt = rv.QueueFilter.parse(request.query)
    now = deps.clock()
    async with deps.database().reads() as session:
        order = (await rv.queue_order(session, visitor.access, visitor.tree, visitor.bundle,
                                      flt, now))[:EXPORT_LIMIT]
        await rv.fill_entries(session, order, visitor.bundle)
    buffer = io.StringIO()
    buffer.write("\ufeff")  # Excel reads UTF-8 (Vietnamese) only with a BOM
    writer = csv.writer(buffer)
    writer.writerow(["Mã bài", "Họ tên", "Đơn vị", "Điện thoại", "Email", "Chiến dịch", "Đợt",
                     "Trạng thái", "Nộp lúc", "Chờ duyệt", "Đã duyệt", "Trả lại"])
    for e in order:
        if e.submission is None or e.participant is None:
            continue
        writer.writerow([_csv_cell(v) for v in (
            e.submission_id, e.participant.name, _unit_name(visitor, e.unit),
            e.participant.phone, e.participant.email,
            rv.campaign_title(visitor.bundle, e.submission.campaign), e.submission.wave,
            rv.status_of(e.submission, e.pending)[1], fmt.local(e.submitted_at),
            e.pending, e.accepted, e.rejected,
        )])
    async with deps.database().sessions() as session, session.begin():
        audit.record(session, visitor.organiser, audit.EXPORTED, now, ip=client_ip(request),
                     rows=len(order), filter=flt.query())
    stamp = now.astimezone(fmt.LOCAL).strftime("%Y%m%d-%H%M")
    return web.Response(
        body=buffer.getvalue().encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="loa-bai-du-thi-{stamp}.csv"'},
    )


# -- one submission -----------------------------------------------------------------------------


async def _next_in_queue(
    session: Any, visitor: Visitor, current: int, now: datetime
) -> int | None:
    order = await rv.queue_order(session, visitor.access, visitor.tree, visitor.bundle,
                                 rv.QueueFilter(), now)
    ids = [e.submission_id for e in order]
    if current in ids:
        after = ids[ids.index(current) + 1 :]
        return after[0] if after else (ids[0] if ids[0] != current else None)
    return ids[0] if ids else None


async def _submission_page(
    request: web.Request, submission_id: int, *, error: str = "", status: int = 200
) -> web.Response:
    deps = _deps(request)
    visitor = request[VISITOR]
    now = deps.clock()
    async with deps.database().reads() as session:
        view = await rv.load_submission(session, visitor.access, submission_id, visitor.bundle)
        if view is None:
            raise _NotFound()
        found = await dups.find_duplicates(session, visitor.access, view.submission,
                                           view.participant)
        next_id = None
        if view.pending == 0:
            next_id = await _next_in_queue(session, visitor, submission_id, now)
        certificate = await certs.certificate_of(session, submission_id)
    async with deps.database().sessions() as session, session.begin():
        audit.record(session, visitor.organiser, audit.SUBMISSION_VIEWED, now,
                     participant_id=view.participant.id, ip=client_ip(request),
                     submission=submission_id)
    closes, channel = view.window()
    return render(
        request,
        "submission.html",
        status=status,
        view=view,
        duplicates=dups.grouped(found),
        error=error,
        done=request.query.get("done", ""),
        next_id=next_id,
        unit_name=_unit_name(visitor, view.unit),
        campaign=rv.campaign_title(visitor.bundle, view.submission.campaign),
        window=fmt.window_text(closes, channel, now),
        urgency=fmt.window_urgency(closes, now),
        state=rv.status_of(view.submission, view.pending),
        quick_reasons=QUICK_REASONS,
        ago=lambda m: fmt.ago(m, now),
        local=fmt.local,
        paused=any(i.paused for i in view.identities),
        certificate=certificate,
    )


async def submission(request: web.Request) -> web.StreamResponse:
    return await _submission_page(request, _id(request))


async def _after_decision(request: web.Request, outcome: rv.Decided) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    try:
        await rv.dispatch_reviews(deps.database(), deps.notify, deps.clock(), bundle=visitor.bundle,
                                  submission_id=outcome.submission_id)
    except Exception:  # the periodic task tries again; the decision itself is stored
        log.exception("submission %d: events not sent yet", outcome.submission_id)
    done = "approved" if outcome.approved else "saved"
    url = _url(request, "submission", {"done": done}, id=outcome.submission_id)
    async with deps.database().reads() as session:
        view = await rv.load_submission(session, visitor.access, outcome.submission_id,
                                        visitor.bundle)
    if view is not None:
        # On to the next item still waiting (the browser scrolls there; the page's script
        # selects it for the keyboard); with none left, the top says what happened.
        waiting = [c for c in view.criteria if c.current.item.status.value == "pending"]
        if waiting:
            url += f"#item-{waiting[0].current.item.id}"
    raise _redirect(url)


async def decision(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    evidence_id = _id(request)
    form = await _form(request)
    choice = form.get("decision", "")
    kinds = {"accept": ReviewDecision.ACCEPT, "reject": ReviewDecision.REJECT}
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        found = await visitor.access.evidence(session, evidence_id)
        if found is None:
            raise _NotFound()
        submission_id = found[1].id
        if choice not in kinds:
            error = "Hãy chọn duyệt hoặc trả lại."
            outcome = None
        else:
            try:
                outcome = await rv.decide(session, visitor.access, visitor.organiser,
                                          evidence_id, kinds[choice], form.get("reason", ""),
                                          now, ip=client_ip(request))
                error = ""
            except rv.ReviewError as problem:
                outcome, error = None, str(problem)
    if outcome is None:
        return await _submission_page(request, submission_id, error=error, status=409)
    return await _after_decision(request, outcome)


async def accept_all(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    submission_id = _id(request)
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        try:
            outcome = await rv.accept_all(session, visitor.access, visitor.organiser,
                                          submission_id, now, ip=client_ip(request))
            error = ""
        except rv.ReviewError as problem:
            outcome, error = None, str(problem)
            if await visitor.access.submission(session, submission_id) is None:
                raise _NotFound() from None
    if outcome is None and error:
        return await _submission_page(request, submission_id, error=error, status=409)
    if outcome is None:
        raise _NotFound()
    return await _after_decision(request, outcome)


async def evidence_file(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    evidence_id = _id(request)
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        found = await visitor.access.evidence(session, evidence_id)
        if found is None or not found[0].sha256:
            raise _NotFound()
        item, sub, participant = found
        try:
            path = deps.file_store().path(item.sha256 or "")
        except BadHash:
            raise _NotFound() from None
        if not path.is_file():
            raise _NotFound()
        audit.record(session, visitor.organiser, audit.EVIDENCE_VIEWED, now,
                     participant_id=participant.id, ip=client_ip(request), evidence=item.id,
                     submission=sub.id)
    mime = item.mime or "application/octet-stream"
    inline = mime.startswith("image/") and mime != "image/svg+xml"
    headers = {
        "Content-Type": mime if inline or mime == "application/pdf" else "application/octet-stream",
        "Cache-Control": "private, no-store",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": (
            "inline" if inline else f'attachment; filename="minh-chung-{item.id}"'
        ),
    }
    return web.FileResponse(path, headers=headers)


# -- participants and hand-over -----------------------------------------------------------------


def _field_rows(visitor: Visitor, participant: Participant) -> list[tuple[str, str]]:
    kinds = visitor.bundle.field_kinds
    rows: list[tuple[str, str]] = []
    for name, value in (participant.profile or {}).items():
        text = str(value)
        kind = kinds.get(name)
        if kind is ExpectKind.UNIT:
            text = _unit_name(visitor, text) or text
        elif kind is ExpectKind.PHONE and text.startswith("+84"):
            text = "0" + text[3:]
        elif kind is ExpectKind.YES_NO:
            text = {"yes": "Có", "no": "Không", "co": "Có", "khong": "Không"}.get(text, text)
        rows.append((FIELD_NAMES.get(name, name.replace("_", " ").capitalize()), text))
    return rows


async def _participant_page(
    request: web.Request, participant_id: int, *, error: str = "", status: int = 200
) -> web.Response:
    deps = _deps(request)
    visitor = request[VISITOR]
    now = deps.clock()
    async with deps.database().reads() as session:
        participant = await visitor.access.participant(session, participant_id)
        if participant is None:
            raise _NotFound()
        identities = await hand.identities_of(session, participant.id)
        handovers = await hand.open_handovers(session, [i.id for i in identities])
        takers: dict[int, str] = {}
        taker_ids = [h.organiser_id for h in handovers if h.organiser_id]
        if taker_ids:
            for oid, name, login in (await session.execute(
                select(Organiser.id, Organiser.name, Organiser.login)
                .where(Organiser.id.in_(taker_ids))
            )).all():
                takers[oid] = name or login
        submissions = (await session.scalars(
            select(Submission).where(Submission.participant_id == participant.id)
            .order_by(Submission.id.desc())
        )).all()
        pending = await rv.pending_counts(session, [s.id for s in submissions])
        requests = (await session.scalars(
            select(OrganiserNotification).where(
                OrganiserNotification.participant_id == participant.id,
            ).order_by(OrganiserNotification.id.desc()).limit(10)
        )).all()
    async with deps.database().sessions() as session, session.begin():
        audit.record(session, visitor.organiser, audit.PARTICIPANT_VIEWED, now,
                     participant_id=participant.id, ip=client_ip(request))
    channels = [
        (i, fmt.window_text(closes_at(i.channel, i.last_inbound_at), i.channel, now),
         fmt.window_urgency(closes_at(i.channel, i.last_inbound_at), now))
        for i in identities
    ]
    release_at = None
    if handovers:
        release_at = max(h.last_activity_at for h in handovers) + deps.handover_timeout
    return render(
        request,
        "participant.html",
        status=status,
        participant=participant,
        fields=_field_rows(visitor, participant),
        unit_name=_unit_name(visitor, unit_of(participant.profile or {}, visitor.bundle)),
        channels=channels,
        handovers=handovers,
        takers=takers,
        release_at=release_at,
        paused=any(i.paused for i in identities),
        submissions=submissions,
        requests=requests,
        error=error,
        done=request.query.get("done", ""),
        can_send=deps.send is not None,
        status_of=rv.status_of,
        pending=pending,
        campaign_title=lambda slug: rv.campaign_title(visitor.bundle, slug),
        ago=lambda m: fmt.ago(m, now),
        local=fmt.local,
        span=fmt.span,
        channel_names=fmt.CHANNEL_NAMES,
        notification_kinds=NotificationKind,
    )


async def participant(request: web.Request) -> web.StreamResponse:
    return await _participant_page(request, _id(request))


async def _hand_action(
    request: web.Request,
    act: Callable[..., Awaitable[hand.Change]],
    done: str,
) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    participant_id = _id(request)
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        person = await visitor.access.participant(session, participant_id)
        if person is None:
            raise _NotFound()
        if not can_take_over(visitor.role):
            return _forbidden(request, "Tài khoản người chấm không nhận hỗ trợ trực tiếp được.")
        try:
            change = await act(session, visitor.organiser, person, now, ip=client_ip(request))
        except hand.HandoverError as problem:
            error = str(problem)
            change = None
    if change is None:
        return await _participant_page(request, participant_id, error=error, status=409)
    await hand.send_events(deps.notify, change.events)
    raise _redirect(_url(request, "participant", {"done": done}, id=participant_id))


async def take(request: web.Request) -> web.StreamResponse:
    return await _hand_action(request, hand.take, "taken")


async def release(request: web.Request) -> web.StreamResponse:
    return await _hand_action(request, hand.release, "released")


async def send_message(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    participant_id = _id(request)
    form = await _form(request)
    text = form.get("text", "")
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        person = await visitor.access.participant(session, participant_id)
        if person is None:
            raise _NotFound()
        if not can_take_over(visitor.role):
            return _forbidden(request, "Tài khoản người chấm không nhắn tin được.")
        if deps.send is None:
            error = "Máy chủ này chưa bật nhắn tin từ bảng điều khiển."
            keys = None
        else:
            try:
                keys = await hand.message(session, visitor.organiser, person, text, now,
                                          ip=client_ip(request))
                error = ""
            except hand.HandoverError as problem:
                keys, error = None, str(problem)
    if keys is None or deps.send is None:
        return await _participant_page(request, participant_id, error=error, status=409)
    try:
        for key in keys:
            await deps.send(key, hand.console_message(text))
    except Exception:
        log.exception("participant %d: console message not queued", participant_id)
        return await _participant_page(
            request, participant_id, status=503,
            error="Chưa gửi được tin nhắn (hệ thống đang bận). Bạn thử lại sau ít phút nhé.",
        )
    raise _redirect(_url(request, "participant", {"done": "sent"}, id=participant_id))


async def _waiting_handovers(session: Any, visitor: Visitor) -> int:
    return int(await session.scalar(
        select(func.count(func.distinct(ChannelIdentity.participant_id)))
        .join(Participant, Participant.id == ChannelIdentity.participant_id)
        .where(ChannelIdentity.paused.is_(True), visitor.access.where())
    ) or 0)


async def handovers(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    now = deps.clock()
    async with deps.database().reads() as session:
        rows = (await session.execute(
            select(ChannelIdentity, Participant)
            .join(Participant, Participant.id == ChannelIdentity.participant_id)
            .where(ChannelIdentity.paused.is_(True), visitor.access.where())
            .order_by(ChannelIdentity.last_inbound_at.desc())
            .limit(200)
        )).all()
        open_ = await hand.open_handovers(session, [r[0].id for r in rows])
        names: dict[int, str] = {}
        ids = [h.organiser_id for h in open_ if h.organiser_id]
        if ids:
            for oid, name, login in (await session.execute(
                select(Organiser.id, Organiser.name, Organiser.login)
                .where(Organiser.id.in_(ids))
            )).all():
                names[oid] = name or login
    by_identity = {h.identity_id: h for h in open_}
    items = [
        (identity, person, by_identity.get(identity.id)) for identity, person in rows
    ]
    return render(request, "handovers.html", items=items, names=names,
                  timeout=deps.handover_timeout, ago=lambda m: fmt.ago(m, now),
                  local=fmt.local, channel_names=fmt.CHANNEL_NAMES)


# -- audit and accounts (admins) ----------------------------------------------------------------


async def _managed_ids(session: Any, visitor: Visitor) -> dict[int, Organiser]:
    everyone = (await session.scalars(select(Organiser).order_by(Organiser.id))).all()
    return {
        o.id: o for o in everyone
        if o.id == visitor.organiser.id or manageable(visitor.organiser, o.org, visitor.tree)
    }


async def audit_page(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    if not can_manage_accounts(visitor.role):
        return _forbidden(request, "Chỉ tài khoản quản trị xem được nhật ký.")
    before = request.query.get("before", "")
    now = deps.clock()
    async with deps.database().reads() as session:
        managed = await _managed_ids(session, visitor)
        rows = await audit.recent(
            session, visitor.access.where(), list(managed),
            before=int(before) if before.isdigit() and len(before) < 18 else None,
        )
    actors = {f"organiser:{oid}": (o.name or o.login) for oid, o in managed.items()}
    return render(request, "audit.html", rows=rows, actors=actors, labels=audit.LABELS,
                  summary=audit.summary,
                  local=fmt.local, ago=lambda m: fmt.ago(m, now))


def _org_choices(visitor: Visitor) -> list[tuple[str, str, int]]:
    base = visitor.tree.nodes[visitor.organiser.org].depth if visitor.organiser.org in \
        visitor.tree else 0
    return [(n.slug, n.name, n.depth - base) for n in visitor.tree.walk(visitor.organiser.org)]


async def organisers_page(
    request: web.Request, *, error: str = "", created: tuple[str, str] | None = None,
    status: int = 200, form: dict[str, str] | None = None,
) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    if not can_manage_accounts(visitor.role):
        return _forbidden(request, "Chỉ tài khoản quản trị quản lý được tài khoản.")
    async with deps.database().reads() as session:
        managed = await _managed_ids(session, visitor)
        last_seen = dict((await session.execute(
            select(OrganiserSession.organiser_id, func.max(OrganiserSession.last_seen_at))
            .where(OrganiserSession.organiser_id.in_(list(managed)))
            .group_by(OrganiserSession.organiser_id)
        )).all())
    return render(request, "organisers.html", status=status, accounts=list(managed.values()),
                  last_seen=last_seen, error=error, created=created, form=form or {},
                  orgs=_org_choices(visitor), tree=visitor.tree, role_options=ROLE_NAMES,
                  local=fmt.local)


async def organisers(request: web.Request) -> web.StreamResponse:
    return await organisers_page(request)


def _units_of_form(raw: str) -> list[str]:
    return [u.strip() for u in raw.replace(";", ",").split(",") if u.strip()]


async def organisers_create(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    if not can_manage_accounts(visitor.role):
        return _forbidden(request, "Chỉ tài khoản quản trị quản lý được tài khoản.")
    form = await _form(request)
    role = {r.value: r for r in OrganiserRole}.get(form.get("role", ""))
    org = form.get("org", "").strip()
    units = _units_of_form(form.get("units", ""))
    error = ""
    login = ""
    try:
        login = validate_email(form.get("login", "").strip(),
                               check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        error = "Email chưa đúng."
    if not error and role is None:
        error = "Hãy chọn vai trò."
    if not error and not manageable(visitor.organiser, org, visitor.tree):
        error = "Đơn vị không thuộc phạm vi bạn quản lý."
    if not error and units:
        inside = visitor.tree.subtree(org)
        wrong = [u for u in units if u not in inside]
        if wrong:
            error = (
                "Không có các đơn vị: " + ", ".join(wrong[:5])
                + f" trong {visitor.tree.name(org)}."
            )
        elif role is not OrganiserRole.REVIEWER:
            error = "Chỉ người chấm mới giới hạn theo đơn vị."
    if error:
        return await organisers_page(request, error=error, status=400, form=form)
    assert role is not None
    password = auth.generate_password()
    hashed = await auth.hash_password_async(password)
    now = deps.clock()
    try:
        async with deps.database().sessions() as session, session.begin():
            account = await auth.create_organiser(
                session, login=login, password_hash=hashed, role=role, org=org, now=now,
                name=form.get("name", "").strip()[:255] or None, units=units,
                must_change_password=True, created_by=audit.actor_of(visitor.organiser),
            )
            audit.record(session, visitor.organiser, audit.ACCOUNT_CREATED, now,
                         ip=client_ip(request), account=account.id, role=role.value, org=org)
    except auth.AccountError as problem:
        return await organisers_page(request, error=str(problem), status=400, form=form)
    return await organisers_page(request, created=(login, password))


async def organisers_change(request: web.Request) -> web.StreamResponse:
    deps = _deps(request)
    visitor = request[VISITOR]
    if not can_manage_accounts(visitor.role):
        return _forbidden(request, "Chỉ tài khoản quản trị quản lý được tài khoản.")
    account_id = _id(request)
    form = await _form(request)
    action = form.get("action", "")
    now = deps.clock()
    password = None
    if action == "reset":
        password = auth.generate_password()
        hashed = await auth.hash_password_async(password)
    async with deps.database().sessions() as session, session.begin():
        account = await session.get(Organiser, account_id)
        if account is None or not manageable(visitor.organiser, account.org, visitor.tree):
            raise _NotFound()
        if account.id == visitor.organiser.id:
            return await organisers_page(
                request, status=400,
                error="Không tự khóa hay đặt lại mật khẩu của chính mình ở đây "
                      "(dùng “Đổi mật khẩu”).")
        if action == "reset" and password is not None:
            await auth.set_password(session, account, hashed, now, must_change=True)
        elif action in ("disable", "enable"):
            account.active = action == "enable"
            account.updated_at = now
            if not account.active:
                await auth.set_password(session, account, account.password_hash, now,
                                        must_change=account.must_change_password)
        else:
            return await organisers_page(request, error="Thao tác không hợp lệ.", status=400)
        audit.record(session, visitor.organiser, audit.ACCOUNT_CHANGED, now,
                     ip=client_ip(request), account=account.id, change=action)
        login = account.login
    if password is not None:
        return await organisers_page(request, created=(login, password))
    raise _redirect(_url(request, "organisers"))


# -- static -------------------------------------------------------------------------------------


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kind = STATIC.get(name)
    if kind is None:
        raise _NotFound()
    return web.FileResponse(
        HERE / "static" / name,
        headers={"Content-Type": f"{kind}; charset=utf-8", "Cache-Control": "no-cache"},
    )


# -- the application ----------------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def create_console_app(deps: ConsoleDeps) -> web.Application:
    """The console as an aiohttp application; mount it with `mount_console` (or
    `app.add_subapp("/admin", create_console_app(deps))`)."""
    from bots.console import notices  # it imports this module

    # Uploads (a flows file, a units list) are capped by their pages well below this.
    app = web.Application(middlewares=[_security_headers, _authenticate, notices.count_open],
                          client_max_size=4 * 1024 * 1024)
    app[DEPS] = deps
    app[JINJA] = _environment()
    r = app.router
    r.add_get("/login", login_page, name="login")
    r.add_post("/login", login_post, name="login_post")
    r.add_post("/logout", logout, name="logout")
    r.add_get("/", queue, name="queue")
    r.add_get("/export.csv", export, name="export")
    r.add_get(r"/submissions/{id}", submission, name="submission")
    r.add_post(r"/submissions/{id}/accept-all", accept_all, name="accept_all")
    r.add_post(r"/evidence/{id}/decision", decision, name="decision")
    r.add_get(r"/evidence/{id}/file", evidence_file, name="evidence_file")
    r.add_get(r"/participants/{id}", participant, name="participant")
    r.add_post(r"/participants/{id}/take", take, name="take")
    r.add_post(r"/participants/{id}/release", release, name="release")
    r.add_post(r"/participants/{id}/message", send_message, name="message")
    r.add_get("/handovers", handovers, name="handovers")
    r.add_get("/audit", audit_page, name="audit")
    r.add_get("/organisers", organisers, name="organisers")
    r.add_post("/organisers", organisers_create, name="organisers_create")
    r.add_post(r"/organisers/{id}", organisers_change, name="organisers_change")
    r.add_get("/password", password_page, name="password")
    r.add_post("/password", password_post, name="password_post")
    r.add_get("/static/{name}", static, name="static")
    from bots.console import dashboard, flows_pages, units_pages  # they import this module

    for pages in (flows_pages, units_pages, dashboard, notices):
        pages.add_routes(r)  # /kich-ban, /don-vi, /bao-cao, /thong-bao
    certs.add_routes(r)  # /certificates/{id}/{kind}
    return app


def mount_console(app: web.Application, deps: ConsoleDeps, prefix: str = "/admin") -> None:
    """Mount the console at `prefix` (and redirect the bare prefix to it)."""
    async def to_console(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(prefix + "/")

    # Before the sub-application: its prefix would otherwise claim the bare path too.
    app.router.add_get(prefix, to_console)
    app.add_subapp(prefix, create_console_app(deps))


async def console_tick(deps: ConsoleDeps, now: datetime | None = None) -> None:
    """The console's periodic work; the runtime calls it about once a minute: send decisions
    not yet delivered into their conversations, hand back stale hand-overs, forget old
    login attempts and sessions."""
    moment = now or deps.clock()
    try:
        await rv.dispatch_reviews(deps.database(), deps.notify, moment, bundle=deps.flows())
    except Exception:
        log.exception("sending review decisions failed; next tick retries")
    try:
        await hand.release_stale_handovers(
            deps.database(), deps.notify, moment, deps.handover_timeout
        )
    except Exception:
        log.exception("releasing stale hand-overs failed; next tick retries")
    try:
        async with deps.database().sessions() as session, session.begin():
            await auth.forget_old(session, moment, timedelta(days=90))
    except Exception:
        log.exception("console housekeeping failed")


__all__ = [
    "ConsoleDeps",
    "console_tick",
    "create_console_app",
    "mount_console",
]

