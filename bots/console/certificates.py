"""Certificates in the console: the submission page's certificate card and file downloads.

    GET /admin/certificates/{id}/{kind}    kind: pdf, png or badge — the certificate's file,
                                           for organisers who can see its participant (else
                                           404, like everything of another subtree), audited

The files live in the certificate store beside the evidence (bots/certificates/issue.py).
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bots.records.files import BadHash, FileStore
from bots.records.models import Certificate, Participant

KINDS = {
    "pdf": ("pdf_sha256", "application/pdf", "giay-chung-nhan-{serial}.pdf"),
    "png": ("png_sha256", "image/png", "giay-chung-nhan-{serial}.png"),
    "badge": ("badge_sha256", "image/png", "huy-hieu-{serial}.png"),
}
CERTIFICATE_VIEWED = "certificate_viewed"
DELIVERY = {"chat": "khung chat", "email": "e-mail"}


def certificate_store(evidence: FileStore) -> FileStore:
    """The certificate files (`<data dir>/files/certificates`, beside the evidence files)."""
    return FileStore(evidence.root / "certificates")


async def certificate_of(session: AsyncSession, submission_id: int) -> Certificate | None:
    """The submission's certificate (the caller checked the submission is visible)."""
    return await session.scalar(
        select(Certificate).where(Certificate.submission_id == submission_id)
    )


async def certificate_file(request: web.Request) -> web.StreamResponse:
    from bots.console import app as console  # the console's helpers (imported late: a cycle)
    from bots.console import audit

    deps = console._deps(request)
    visitor = request[console.VISITOR]
    certificate_id = console._id(request)
    kind = KINDS.get(request.match_info.get("kind", ""))
    if kind is None:
        raise console._NotFound()
    column, mime, filename = kind
    now = deps.clock()
    async with deps.database().sessions() as session, session.begin():
        row = (await session.execute(
            select(Certificate, Participant)
            .join(Participant, Participant.id == Certificate.participant_id)
            .where(Certificate.id == certificate_id, visitor.access.where())
        )).first()
        if row is None:
            raise console._NotFound()
        certificate = row[0]
        sha = getattr(certificate, column)
        if not sha:
            raise console._NotFound()
        try:
            path = certificate_store(deps.file_store()).path(sha)
        except BadHash:
            raise console._NotFound() from None
        if not path.is_file():
            raise console._NotFound()
        audit.record(session, visitor.organiser, CERTIFICATE_VIEWED, now,
                     participant_id=certificate.participant_id, ip=console.client_ip(request),
                     certificate=certificate.id, kind=request.match_info["kind"])
    name = filename.format(serial=certificate.serial or certificate.id)
    return web.FileResponse(path, headers={
        "Content-Type": mime,
        "Cache-Control": "private, no-store",
        "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'{"attachment" if mime == "application/pdf" else "inline"}; '
                               f'filename="{name}"',
    })


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(r"/certificates/{id}/{kind}", certificate_file, name="certificate_file")


__all__ = ["CERTIFICATE_VIEWED", "add_routes", "certificate_file", "certificate_of",
           "certificate_store"]
