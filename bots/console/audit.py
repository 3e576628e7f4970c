"""The audit log of organiser actions: who did what to whose data, and when.

Rows go to the records' `audit_log` (shared with the bot's own entries), inside the same
transaction as the action they describe, so an action is never without its row. Viewing
personal data counts as an action: every evidence file served is a row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bots.records.models import AuditEntry, Organiser, Participant

# Actions the console writes (the bot writes others: consent_given, submission_submitted, ...).
LOGIN = "login"
LOGOUT = "logout"
PASSWORD_CHANGED = "password_changed"
EVIDENCE_VIEWED = "evidence_viewed"
SUBMISSION_VIEWED = "submission_viewed"
PARTICIPANT_VIEWED = "participant_viewed"
EVIDENCE_ACCEPTED = "evidence_accepted"
EVIDENCE_REJECTED = "evidence_rejected"
SUBMISSION_APPROVED = "submission_approved"
HANDOVER_TAKEN = "handover_taken"
HANDOVER_MESSAGE = "handover_message"
HANDOVER_RELEASED = "handover_released"
EXPORTED = "exported"
ACCOUNT_CREATED = "account_created"
ACCOUNT_CHANGED = "account_changed"

LABELS = {
    LOGIN: "Đăng nhập",
    LOGOUT: "Đăng xuất",
    PASSWORD_CHANGED: "Đổi mật khẩu",
    EVIDENCE_VIEWED: "Xem ảnh minh chứng",
    SUBMISSION_VIEWED: "Mở bài dự thi",
    PARTICIPANT_VIEWED: "Xem thông tin người tham gia",
    EVIDENCE_ACCEPTED: "Duyệt minh chứng",
    EVIDENCE_REJECTED: "Trả lại minh chứng",
    SUBMISSION_APPROVED: "Duyệt bài dự thi",
    HANDOVER_TAKEN: "Nhận hỗ trợ trực tiếp",
    HANDOVER_MESSAGE: "Nhắn tin cho người tham gia",
    HANDOVER_RELEASED: "Trả lại cho trợ lý tự động",
    EXPORTED: "Xuất danh sách",
    ACCOUNT_CREATED: "Tạo tài khoản",
    ACCOUNT_CHANGED: "Sửa tài khoản",
    "notice_handled": "Đánh dấu đã xử lý thông báo",
    "submission_submitted": "Nộp bài (người tham gia)",
    "consent_given": "Đồng ý cung cấp thông tin",
    "consent_refused": "Từ chối cung cấp thông tin",
    "handover_requested": "Yêu cầu gặp cán bộ",
    "personal_data_deleted": "Xóa dữ liệu cá nhân theo yêu cầu",
    "flow_finished": "Hoàn thành kịch bản",
    "certificate_requested": "Xác nhận tên in trên giấy chứng nhận",
    "certificate_issued": "Cấp giấy chứng nhận",
    "certificate_emailed": "Gửi giấy chứng nhận qua e-mail",
    "certificate_viewed": "Tải giấy chứng nhận",
}


def actor_of(organiser: Organiser | None) -> str:
    return f"organiser:{organiser.id}" if organiser is not None else "system"


def record(
    session: AsyncSession,
    organiser: Organiser | None,
    action: str,
    now: datetime,
    *,
    participant_id: int | None = None,
    ip: str | None = None,
    **detail: Any,
) -> None:
    """Add an audit row to the caller's transaction. `detail` holds ids and kinds, never a
    password, token or the text of a message or rejection reason (those live in their own
    rows, deleted with the person's data)."""
    if ip:
        detail["ip"] = ip
    session.add(
        AuditEntry(
            at=now,
            actor=actor_of(organiser),
            action=action,
            participant_id=participant_id,
            detail=detail,
        )
    )


def summary(detail: dict[str, Any] | None) -> str:
    """The detail of a row as organisers read it: "bài #12 · minh chứng #40 (vneid)"."""
    d = detail or {}
    parts: list[str] = []
    if d.get("submission"):
        parts.append(f"bài #{d['submission']}")
    if d.get("evidence"):
        item = f"minh chứng #{d['evidence']}"
        if d.get("criterion"):
            item += f" ({d['criterion']})"
        parts.append(item)
    if d.get("reason") == "timeout":
        parts.append("tự động sau thời gian chờ")
    if "rows" in d:
        parts.append(f"{d['rows']} dòng")
    if d.get("change"):
        parts.append({"reset": "cấp mật khẩu tạm", "disable": "khóa", "enable": "mở khóa"}.get(
            str(d["change"]), str(d["change"])))
    if d.get("account"):
        parts.append(f"tài khoản #{d['account']}")
    if d.get("notice"):
        parts.append(f"thông báo #{d['notice']}" + (f" ({d['district']})" if d.get("district")
                                                      else ""))
    if d.get("ip"):
        parts.append(str(d["ip"]))
    return " · ".join(parts)


async def recent(
    session: AsyncSession,
    visible: ColumnElement[bool],
    organisers: list[int],
    *,
    limit: int = 200,
    before: int | None = None,
) -> list[tuple[AuditEntry, Participant | None]]:
    """The newest rows about participants the viewer may see (`visible`, a condition on
    Participant), or by accounts it manages (`organisers`)."""
    actors = [f"organiser:{i}" for i in organisers]
    stmt = (
        select(AuditEntry, Participant)
        .outerjoin(Participant, Participant.id == AuditEntry.participant_id)
        .where(or_(visible, AuditEntry.actor.in_(actors)) if actors else visible)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    rows = (await session.execute(stmt)).all()
    return [(row[0], row[1]) for row in rows]


__all__ = ["LABELS", "actor_of", "recent", "record", "summary"]
