"""Public certificate pages: anyone can check a certificate; a holder can find theirs again.

    GET  /verify                 a form to type a serial (?serial=… redirects to its page)
    GET  /verify/{serial}        the certificate's page: valid or revoked, and only the name,
                                 unit, campaign, issuing organisation and date printed on it
    GET  /chung-nhan             "find my certificate": phone number → one-time code → links
    POST /chung-nhan             step=send (phone) or step=check (phone, code)
    GET  /chung-nhan/style.css   the pages' stylesheet

A malformed serial is answered 404 before anything is looked up (a typed serial in a loose form
— lower case, O for 0 — is redirected to its canonical page first). Every client address gets
30 look-ups a minute (in this process; the QR code on a certificate is all an honest visitor
needs). The look-up page's limits live in the records (bots.certificates.lookup).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import select

from bots.certificates import lookup
from bots.certificates.issue import local_date
from bots.certificates.mail import SmtpSettings
from bots.certificates.render import smart_quotes
from bots.certificates.serial import is_valid_serial, normalize_serial
from bots.records.db import Database
from bots.records.models import Certificate, CertificateStatus
from flows.compiler import CompiledBundle
from flows.vocab import Inbound

TEMPLATES = Path(__file__).parent / "certificates" / "templates"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
MEDIA = "/media/"


class SlidingLimit:
    """At most `limit` hits per `period` seconds per key, in this process (a bounded map)."""

    def __init__(self, limit: int, period: float, keys: int = 20_000) -> None:
        self.limit = limit
        self.period = period
        self.keys = keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        moment = time.monotonic() if now is None else now
        hits = self._hits.pop(key, None) or deque()
        while hits and hits[0] <= moment - self.period:
            hits.popleft()
        allowed = len(hits) < self.limit
        if allowed:
            hits.append(moment)
        self._hits[key] = hits  # most recent last
        while len(self._hits) > self.keys:
            self._hits.popitem(last=False)
        return allowed


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PublicDeps:
    """What the public pages need (functions: the runtime starts after the app is built)."""

    db: Callable[[], Database]
    flows: Callable[[], CompiledBundle]
    notify: Callable[[Inbound], Awaitable[Any]]
    smtp: Callable[[], SmtpSettings | None] = lambda: None
    clock: Callable[[], datetime] = _utcnow
    trust_forwarded: bool = False
    verify_limit: SlidingLimit = field(default_factory=lambda: SlidingLimit(30, 60.0))


DEPS: web.AppKey[PublicDeps] = web.AppKey("public_deps", PublicDeps)
JINJA: web.AppKey[Environment] = web.AppKey("public_jinja", Environment)


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _page(request: web.Request, template: str, status: int = 200, *, private: bool = False,
          **context: Any) -> web.Response:
    html = request.app[JINJA].get_template(template).render(**context)
    return web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8",
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Robots-Tag": "noindex",
            # Look-up results list one person's files: never kept.
            "Cache-Control": "private, no-store" if private else "no-cache",
        },
    )


def _client(request: web.Request) -> str:
    if request.app[DEPS].trust_forwarded:
        first = request.headers.get("X-Forwarded-For", "").split(",", 1)[0].strip()
        if first:
            return first[:64]
    return (request.remote or "unknown")[:64]


def _date(value: Any) -> str:
    return value.strftime("%d/%m/%Y") if value is not None else ""


# -- /verify -------------------------------------------------------------------------------------


async def verify_form(request: web.Request) -> web.StreamResponse:
    typed = request.query.get("serial", "")
    if typed:
        serial = normalize_serial(typed)
        if serial is not None:
            raise web.HTTPSeeOther(f"/verify/{quote(serial)}")
        return _page(request, "public_verify_form.html", 400, typed=typed[:80],
                     error="Số hiệu chưa đúng dạng. Số hiệu có dạng CDS-2023-000123-K7Q4XM.")
    return _page(request, "public_verify_form.html", typed="", error="")


async def verify(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["serial"]
    if not is_valid_serial(raw):
        canonical = normalize_serial(raw)
        if canonical is not None and canonical != raw:
            raise web.HTTPMovedPermanently(f"/verify/{quote(canonical)}")
        return _not_found(request)  # before any look-up
    deps = request.app[DEPS]
    if not deps.verify_limit.allow(_client(request)):
        response = _page(request, "public_message.html", 429, title="Thử lại sau ít phút",
                         text="Bạn kiểm tra quá nhiều giấy chứng nhận trong một phút. "
                              "Bạn thử lại sau ít phút nhé.")
        response.headers["Retry-After"] = "60"
        return response
    async with deps.db().reads() as session:
        row = await session.scalar(select(Certificate).where(Certificate.serial == raw))
    if row is None or row.status not in (CertificateStatus.ISSUED, CertificateStatus.REVOKED):
        return _not_found(request)
    bundle = deps.flows()
    campaign = bundle.campaigns.get(row.campaign)
    return _page(
        request, "public_verify.html",
        valid=row.status is CertificateStatus.ISSUED,
        serial=row.serial,
        name=row.name,
        unit=row.unit or "",
        # As printed: typographic quotes, the date in Vietnam.
        campaign=smart_quotes(campaign.title if campaign is not None else row.campaign),
        organisation=bundle.district(row.district).name or "",
        issued_on=_date(row.issued_on),
        revoked_on=_date(local_date(row.revoked_at)) if row.revoked_at else "",
    )


def _not_found(request: web.Request) -> web.Response:
    return _page(request, "public_message.html", 404, title="Không tìm thấy giấy chứng nhận",
                 text="Không có giấy chứng nhận nào mang số hiệu này. Bạn kiểm tra lại số hiệu "
                      "in dưới mã QR nhé.")


# -- /chung-nhan -----------------------------------------------------------------------------------


async def lookup_form(request: web.Request) -> web.StreamResponse:
    return _page(request, "public_lookup.html", step="phone", phone="", error="", sent=False,
                 certificates=[], private=True)


async def lookup_post(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    form = await request.post()
    step = str(form.get("step", "send"))
    typed = str(form.get("phone", ""))[:40]
    phone = lookup.normal_phone(typed)
    if phone is None:
        return _page(request, "public_lookup.html", 400, step="phone", phone=typed, sent=False,
                     certificates=[], private=True,
                     error="Số điện thoại chưa đúng. Bạn nhập 10 số, ví dụ 0912345678.")
    now = deps.clock()
    if step == "check":
        try:
            found = await lookup.check_code(deps.db(), phone, str(form.get("code", "")), now)
        except lookup.LookupRefused as refusal:
            return _page(request, "public_lookup.html", 400, step="code", phone=typed, sent=False,
                         certificates=[], private=True, error=str(refusal))
        bundle = deps.flows()
        items = [_listed(row, bundle) for row in found]
        return _page(request, "public_lookup.html", step="done", phone=typed, sent=False,
                     certificates=items, private=True, error="")
    try:
        await lookup.request_code(deps.db(), phone, _client(request), now, deps.notify,
                                  deps.smtp())
    except lookup.LookupRefused as refusal:
        return _page(request, "public_lookup.html", 429, step="phone", phone=typed, sent=False,
                     certificates=[], private=True, error=str(refusal))
    return _page(request, "public_lookup.html", step="code", phone=typed, sent=True,
                 certificates=[], private=True, error="")


def _listed(row: Certificate, bundle: CompiledBundle) -> dict[str, str]:
    campaign = bundle.campaigns.get(row.campaign)
    return {
        "name": row.name,
        "campaign": smart_quotes(campaign.title if campaign is not None else row.campaign),
        "issued_on": _date(row.issued_on),
        "serial": row.serial or "",
        "pdf": f"{MEDIA}{row.pdf_sha256}.pdf" if row.pdf_sha256 else "",
        "png": f"{MEDIA}{row.png_sha256}.png" if row.png_sha256 else "",
        "badge": f"{MEDIA}{row.badge_sha256}.png" if row.badge_sha256 else "",
        "verify": f"/verify/{quote(row.serial or '')}",
    }


async def stylesheet(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        TEMPLATES / "public.css",
        headers={"Content-Type": "text/css; charset=utf-8", "Cache-Control": "no-cache",
                 "X-Content-Type-Options": "nosniff"},
    )


def add_public_routes(app: web.Application, deps: PublicDeps) -> None:
    app[DEPS] = deps
    app[JINJA] = _environment()
    app.router.add_get("/verify", verify_form)
    app.router.add_get("/verify/{serial}", verify)
    app.router.add_get("/chung-nhan", lookup_form)
    app.router.add_post("/chung-nhan", lookup_post)
    app.router.add_get("/chung-nhan/style.css", stylesheet)


__all__ = ["PublicDeps", "SlidingLimit", "add_public_routes"]
