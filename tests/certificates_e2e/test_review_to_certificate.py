"""The organiser-console milestone end to end, over HTTP only: a participant of district A
(demo) registers and submits four evidence items in the browser chat; A's organiser logs in,
opens the submission, rejects one item with a reason; the chat says which item and why and is
back at that step; the participant sends it again; the organiser approves; the participant
confirms the printed name and receives the certificate in the chat. Its PNG's QR code decodes to
the public verify URL, whose page shows the name. District B's organiser gets 404 for every URL
of A's."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from urllib.parse import urlsplit

import zxingcpp
from PIL import Image
from sqlalchemy import select

from bots.records.models import (
    CertificateStatus,
    EvidenceItem,
    EvidenceStatus,
    Submission,
    SubmissionStatus,
)
from tests.certificates_e2e.conftest import (
    IMAGES,
    NAME,
    PRINTED,
    PUBLIC,
    Chat,
    Server,
    register_and_submit,
    screenshot,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REASON = "Ảnh bị cắt mất mã QR, bạn chụp lại cả màn hình nhé"


def decision_forms(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'action="/admin/evidence/(\d+)/decision"', html)]


async def test_reject_resend_approve_confirm_name_certificate_and_verify(server: Server) -> None:
    chat = Chat(server.client)
    await register_and_submit(chat, IMAGES)
    a, b = server.organisers["a"], server.organisers["b"]

    # -- A's organiser finds it in the queue and opens it
    queue = await a.get_text("/admin/")
    assert NAME in queue
    submission = await server.submission_of(chat)
    page = await a.get_text(f"/admin/submissions/{submission.id}")
    items = decision_forms(page)
    assert len(items) == 4  # every item decidable
    evidence_urls = re.findall(r'src="(/admin/evidence/\d+/file)"', page)
    assert len(evidence_urls) == 3
    status, body, headers = await a.get(evidence_urls[0])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(IMAGES["vneid"]).hexdigest()

    # -- reject step 2 (the Thanh niên Việt Nam QR) with a reason
    second = items[1]
    status, html = await a.post(f"/admin/evidence/{second}/decision",
                                {"decision": "reject", "reason": REASON})
    assert status == 200 and "Đã lưu quyết định" in html
    told = Chat.text(await chat.replies())
    assert f"Minh chứng “Bước 2/4” của bạn chưa được duyệt: {REASON}." in told
    assert "Bước 2/4: Mở ứng dụng \"Thanh niên Việt Nam\"" in told  # back at that step

    # -- the participant sends it again: the same submission is back in the queue
    again = await chat.upload(screenshot("#283593", "MA QR CUA TOI - DAY DU"), "qr-moi.png")
    assert "đã gửi đủ 4 minh chứng" in again
    resubmitted = await server.submission_of(chat)
    assert resubmitted.id == submission.id and resubmitted.status is SubmissionStatus.SUBMITTED
    page = await a.get_text(f"/admin/submissions/{submission.id}")
    assert "Các lần gửi trước" in page and REASON in page

    # -- approve: every current item accepted
    status, html = await a.post(f"/admin/submissions/{submission.id}/accept-all", {})
    assert status == 200 and "Bài đã được duyệt" in html
    told = Chat.text(await chat.replies())
    assert "Chúc mừng bạn!" in told
    assert f"Tên in trên giấy chứng nhận: {PRINTED} — đúng chưa?" in told
    assert await server.certificates() == []  # nothing printed before the name is confirmed

    # -- the participant confirms the name: the certificate arrives in the chat
    await chat.tap("Đúng")
    certificate = next(m for m in reversed(chat.messages) if "Số hiệu" in m.get("text", ""))
    assert f"mang tên {PRINTED}" in Chat.text(chat.messages)
    assert certificate["image"].startswith("/media/") and certificate["image"].endswith(".png")
    assert certificate.get("file", "").endswith(".pdf")
    badge = next(m for m in reversed(chat.messages) if "huy hiệu" in m.get("text", "").lower())
    assert badge["image"].endswith(".png")

    [row] = await server.certificates()
    assert row.status is CertificateStatus.ISSUED and row.name == PRINTED
    assert row.unit == "Chi đoàn Khu phố 1" and row.delivered_via == "chat"
    assert row.serial is not None and row.serial.startswith("CDSD-")
    assert row.serial in certificate["text"]

    # The PNG behind the chat's image: its QR opens the verify page.
    response = await server.client.get(certificate["image"])
    assert response.status == 200 and response.headers["Content-Type"] == "image/png"
    png = await response.read()
    assert hashlib.sha256(png).hexdigest() == row.png_sha256
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "certificate-e2e.png").write_bytes(png)  # to look at
    decoded = [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]
    assert decoded == [f"{PUBLIC}/verify/{row.serial}"]
    verify = await server.client.get(urlsplit(decoded[0]).path)
    html = await verify.text()
    assert verify.status == 200
    assert PRINTED in html and "Chi đoàn Khu phố 1" in html and "Giấy chứng nhận hợp lệ" in html
    assert "Công dân số" in html and "Đoàn phường Mẫu" in html
    assert "0912" not in html and "an.nguyen" not in html  # no personal data beyond the print
    pdf = await server.client.get(certificate["file"])
    assert pdf.status == 200 and (await pdf.read()).startswith(b"%PDF")
    # Evidence is stored content-addressed too, but /media/ never serves it.
    evidence_sha = hashlib.sha256(IMAGES["vneid"]).hexdigest()
    assert server.runtime.files.exists(evidence_sha)
    assert (await server.client.get(f"/media/{evidence_sha}.png")).status == 404

    # The organiser downloads it from the submission page.
    page = await a.get_text(f"/admin/submissions/{submission.id}")
    assert row.serial in page and "Đã gửi vào khung chat" in page
    downloads = re.findall(r'href="(/admin/certificates/\d+/(?:pdf|png|badge))"', page)
    assert len(downloads) == 3
    for url in downloads:
        status, body, _ = await a.get(url)
        assert status == 200 and body

    # -- district B sees none of it, not even by guessing URLs
    assert NAME not in await b.get_text("/admin/")
    participant_id = int(re.search(r'href="/admin/participants/(\d+)"', page).group(1))  # type: ignore[union-attr]
    evidence_urls = re.findall(r'(/admin/evidence/\d+/file)', page)
    a_urls = [
        f"/admin/submissions/{submission.id}",
        f"/admin/participants/{participant_id}",
        *evidence_urls,
        *downloads,
    ]
    for url in a_urls:
        assert (await a.get(url))[0] == 200, url  # they exist...
        assert (await b.get(url))[0] == 404, url  # ...and B cannot tell
    for path, data in (
        (f"/admin/evidence/{items[0]}/decision", {"decision": "reject", "reason": "x"}),
        (f"/admin/submissions/{submission.id}/accept-all", {}),
        (f"/admin/participants/{participant_id}/take", {}),
        (f"/admin/participants/{participant_id}/message", {"text": "chào bạn"}),
    ):
        status, _ = await b.post(path, data)
        assert status == 404, path
    for query in ("", "?unit=kp-1", "?campaign=cong_dan_so_demo&status=da_duyet",
                  "?status=tat_ca"):
        status, body, _ = await b.get("/admin/export.csv" + query)
        text = body.decode("utf-8-sig")
        assert status == 200 and NAME not in text and "0912345678" not in text
        assert "an.nguyen@gmail.com" not in text
    status, body, _ = await a.get("/admin/export.csv?status=tat_ca")
    assert NAME in body.decode("utf-8-sig")  # the same export shows them to A

    # Nothing was changed by B's attempts.
    async with server.runtime.db.reads() as session:
        statuses = [i.status for i in (await session.scalars(
            select(EvidenceItem).where(EvidenceItem.submission_id == submission.id)
        )).all()]
        final = await session.get(Submission, submission.id)
    assert final is not None and final.status is SubmissionStatus.APPROVED
    assert statuses.count(EvidenceStatus.REJECTED) == 1 and EvidenceStatus.PENDING not in statuses


async def test_verify_refuses_malformed_and_unknown_serials(server: Server) -> None:
    client = server.client
    for bad in ("x", "CDS-2023-1-AAAAAA", "../../etc/passwd", "CDS-2023-000001-AAAAAI" + "A" * 50):
        response = await client.get(f"/verify/{bad}")
        assert response.status == 404
    unknown = await client.get("/verify/CDS-2023-000001-K7Q4XM")
    assert unknown.status == 404 and "Không tìm thấy" in await unknown.text()
    typed = await client.get("/verify/cds-2023-000001-k7q4xm", allow_redirects=False)
    assert typed.status == 301 and typed.headers["Location"] == "/verify/CDS-2023-000001-K7Q4XM"
    # Rate-limited per client address (30 look-ups a minute).
    statuses = [(await client.get("/verify/CDS-2023-000002-K7Q4XM")).status for _ in range(31)]
    assert statuses[:28] == [404] * 28 and statuses[-1] == 429


async def test_an_organisers_message_reaches_the_browser_chat(server: Server) -> None:
    """The console's messages enter the conversation as SYSTEM "say" events (the server's
    `send`), which the running engine answers with the organiser's text."""
    chat = Chat(server.client)
    assert "Bạn muốn làm gì" in await chat.start()
    async with server.runtime.db.reads() as session:
        from bots.records.models import ChannelIdentity

        participant_id = await session.scalar(
            select(ChannelIdentity.participant_id).where(ChannelIdentity.user_id == chat.user)
        )
    a, b = server.organisers["a"], server.organisers["b"]
    assert (await b.post(f"/admin/participants/{participant_id}/take", {}))[0] == 404
    status, _ = await a.post(f"/admin/participants/{participant_id}/take", {})
    assert status == 200
    status, _ = await a.post(f"/admin/participants/{participant_id}/message",
                             {"text": "Chào bạn, mình là cán bộ phường, bạn cần giúp gì?"})
    assert status == 200
    told = await chat.replies()
    assert [m["text"] for m in told][-1] == "Chào bạn, mình là cán bộ phường, bạn cần giúp gì?"
    assert told[-1]["notice"] == "system"
    assert await chat.say("Mình chưa gửi được ảnh") == ""  # the bot stays quiet meanwhile
    status, _ = await a.post(f"/admin/participants/{participant_id}/release", {})
    assert "Trợ lý tự động đã quay lại" in Chat.text(await chat.replies())
