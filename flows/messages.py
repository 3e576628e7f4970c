"""Built-in Vietnamese texts: what Loa says when a flow does not say it itself.

Each text names the problem and what to do next. `{…}` fields are filled with `str.format`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from flows.schema import ExpectKind
from flows.validators import TEXT_MAX, Reason

# -- button titles --------------------------------------------------------------------------------
YES_TITLE = "Có"
NO_TITLE = "Không"
CONSENT_YES_TITLE = "Đồng ý"
CONSENT_NO_TITLE = "Không đồng ý"
MENU_TITLE = "Menu"
HELP_TITLE = "Trợ giúp"
KEEP_TITLE = "Giữ nguyên"
DELETE_YES_TITLE = "Xóa dữ liệu"
DELETE_NO_TITLE = "Không xóa"

# -- global commands ------------------------------------------------------------------------------
HELP = (
    "Mình là trợ lý tự động của Ban Tổ chức. Bạn có thể:\n"
    "• trả lời câu hỏi mình đang hỏi (hoặc bấm nút bên dưới câu hỏi);\n"
    "• gõ “menu” để về màn hình chính, “hủy” để dừng phần đang làm;\n"
    "• gõ “kết quả” để xem thông tin và bài dự thi của bạn;\n"
    "• gõ “sửa thông tin” để sửa thông tin đăng ký;\n"
    "• gõ “xóa dữ liệu của tôi” để yêu cầu xóa dữ liệu cá nhân."
)
CANCELLED = "Đã dừng phần đang làm. Khi nào cần, bạn gõ “menu” để bắt đầu lại nhé."
WAY_OUT = (
    "Có vẻ câu hỏi này đang làm khó bạn. Bạn có thể trả lời lại, chọn “Menu” để về màn hình "
    "chính hoặc “Trợ giúp” để xem hướng dẫn."
)
DELETE_CONFIRM = (
    "Bạn có chắc muốn xóa toàn bộ dữ liệu cá nhân của mình (thông tin đăng ký, minh chứng đã "
    "gửi) không? Việc này không hoàn tác được."
)
DELETED = (
    "Mình đã ghi nhận yêu cầu xóa dữ liệu của bạn. Ban Tổ chức sẽ xóa thông tin cá nhân và "
    "minh chứng bạn đã gửi. Khi nào cần, bạn gõ “menu” để bắt đầu lại."
)
DELETE_KEPT = "Mình giữ nguyên dữ liệu của bạn."
EDIT_NOTHING = "Hiện chưa có phần đăng ký thông tin nào để sửa."
EDIT_START = (
    "Mình sẽ hỏi lại từng thông tin. Thông tin nào vẫn đúng, bạn bấm “Giữ nguyên” (hoặc gõ "
    "“giữ”) nhé."
)
EDIT_CURRENT = "(Hiện tại: {value})"
EDIT_DONE = "Đã cập nhật thông tin của bạn."
KEEP_WORDS = ("giữ", "giữ nguyên", "giu", "giu nguyen", "như cũ", "không đổi", "bỏ qua")

# -- status ("kết quả") ----------------------------------------------------------------------------
STATUS_HEADER = "Kết quả của bạn:"
STATUS_EMPTY = "Bạn chưa đăng ký hay gửi bài nào. Gõ “menu” để bắt đầu nhé."
STATUS_REGISTERED = "• {title}: đã hoàn thành"
STATUS_NOT_REGISTERED = "• {title}: chưa hoàn thành"
STATUS_SUBMITTED = "• {title}: đã nộp{wave}, đang chờ Ban Tổ chức xét duyệt"
STATUS_IN_PROGRESS = "• {title}: đang làm, đã gửi {sent}/{total} minh chứng{items}"
STATUS_CURRENT = "Bạn đang làm dở “{title}”. Mình hỏi tiếp nhé:"

# -- flow lifecycle -------------------------------------------------------------------------------
VERSION_RESTART = (
    "Nội dung “{title}” vừa được Ban Tổ chức cập nhật, mình xin phép hỏi lại từ đầu phần này nhé."
)
FLOW_GONE = "Phần bạn đang làm không còn nữa. Mình đưa bạn về màn hình chính nhé."
REQUIRES_FIRST = "Trước tiên, bạn cần hoàn thành “{title}” nhé."
CLOSED = "“{title}” hiện không nhận bài. Thời gian nhận bài: {windows}."
CLOSED_NO_WAVES = "“{title}” hiện không nhận bài."
CONSENT_REFUSED = (
    "Bạn đã không đồng ý nên mình sẽ không lưu thông tin của bạn. Khi nào sẵn sàng, bạn gõ "
    "“menu” nhé."
)
SUBMITTED = (
    "Mình đã gửi bài của bạn tới Ban Tổ chức để xét duyệt. Kết quả sẽ được báo cho bạn tại đây."
)
HANDOVER = (
    "Mình đã chuyển cuộc trò chuyện cho cán bộ phụ trách. Bạn chờ một chút, cán bộ sẽ trả lời "
    "bạn tại đây nhé."
)
NOTIFY_DEFAULT = "Người tham gia cần hỗ trợ ({flow})."
NO_FLOWS = "Hiện chưa có nội dung nào. Bạn quay lại sau nhé."
STALE_BUTTON = "Nút bạn vừa bấm thuộc một câu hỏi trước. Mình đang hỏi:"

# -- organiser actions (SYSTEM events) ------------------------------------------------------------
RESUMED = "Trợ lý tự động đã quay lại. Mình tiếp tục nhé."
APPROVED = "Chúc mừng bạn! Bài của bạn đã được Ban Tổ chức duyệt."
APPROVED_CAMPAIGN = "Chúc mừng bạn! Bài dự thi “{title}” của bạn đã được Ban Tổ chức duyệt."
REJECTED = "Minh chứng “{item}” của bạn chưa được duyệt: {reason}. Bạn gửi lại giúp mình nhé."
REJECTED_NO_REASON = "Minh chứng “{item}” của bạn chưa được duyệt. Bạn gửi lại giúp mình nhé."
REJECTED_UNKNOWN = "Ban Tổ chức đề nghị bạn bổ sung minh chứng: {reason}. Gõ “menu” để gửi lại nhé."

# -- certificates (after an approval) -------------------------------------------------------------
CERT_NAME_CONFIRM = "Tên in trên giấy chứng nhận: {name} — đúng chưa?"
CERT_YES_TITLE = "Đúng"
CERT_EDIT_TITLE = "Sửa tên"
CERT_YES_WORDS = ("đúng", "đúng rồi", "chuẩn", "chính xác", "đúng ạ", "đúng rồi ạ")
CERT_EDIT_WORDS = ("sửa tên", "sửa", "đổi tên", "sai", "sai tên", "chưa đúng", "sửa lại")
CERT_NAME_ASK = (
    "Bạn gõ họ và tên đầy đủ, có dấu, đúng như muốn in trên giấy chứng nhận nhé "
    "(ví dụ: Nguyễn Văn An)."
)
CERT_NAME_BAD = (
    "Họ tên chỉ gồm chữ cái và khoảng trắng, từ 4 đến 60 ký tự. Bạn gõ lại giúp mình nhé "
    "(ví dụ: Nguyễn Văn An)."
)
CERT_CONFIRM_RETRY = "Bạn chọn “Đúng” nếu tên đã đúng, hoặc “Sửa tên” để gõ lại nhé."
CERT_FIRST = "Bạn xác nhận tên in trên giấy chứng nhận trước nhé, chỉ cần một chạm thôi."
CERT_CONFIRMED = (
    "Cảm ơn bạn! Mình đang in giấy chứng nhận mang tên {name}, bạn chờ ít phút nhé."
)
CERT_READY = (
    "Giấy chứng nhận “{title}” của bạn đây!\n"
    "Số hiệu: {serial}\n"
    "Tải bản PDF để in: {pdf}\n"
    "Ai cũng kiểm tra được giấy chứng nhận này tại: {verify}"
)
CERT_BADGE = "Còn đây là huy hiệu số của bạn. Bạn tải về và chia sẻ nhé!"
STATUS_CERT_PENDING = "• {title}: đã được duyệt, chờ bạn xác nhận tên in trên giấy chứng nhận"

# -- errors ---------------------------------------------------------------------------------------
ERROR = (
    "Xin lỗi, hệ thống vừa gặp trục trặc nên chưa xử lý được tin nhắn này. Thông tin bạn đã gửi "
    "vẫn được giữ nguyên, bạn thử lại sau ít phút nhé."
)

# -- invalid answers ------------------------------------------------------------------------------
# What the question needs, to complete "mình cần …" in kind-mismatch messages.
NEEDS: Mapping[ExpectKind, str] = MappingProxyType(
    {
        ExpectKind.TEXT: "câu trả lời bằng chữ",
        ExpectKind.NUMBER: "một con số",
        ExpectKind.EMAIL: "địa chỉ email của bạn",
        ExpectKind.PHONE: "số điện thoại của bạn",
        ExpectKind.CCCD: "số căn cước công dân (12 chữ số)",
        ExpectKind.DATE: "một ngày theo dạng ngày/tháng/năm",
        ExpectKind.CHOICE: "bạn chọn một nút bên dưới (hoặc gõ số thứ tự)",
        ExpectKind.UNIT: "tên đơn vị của bạn",
        ExpectKind.IMAGE: "một ảnh chụp màn hình",
        ExpectKind.FILE: "một tệp hoặc ảnh",
        ExpectKind.YES_NO: "câu trả lời “có” hoặc “không”",
    }
)

REASONS: Mapping[Reason, str] = MappingProxyType(
    {
        Reason.EMPTY: "Bạn chưa nhập gì cả, bạn trả lời giúp mình nhé.",
        Reason.TOO_SHORT: "Câu trả lời hơi ngắn, bạn viết ít nhất {min} ký tự nhé.",
        Reason.TOO_LONG: "Câu trả lời dài quá, bạn viết gọn trong {max} ký tự nhé.",
        Reason.NOT_NUMBER: "Mình cần một con số (VD: 12 hoặc 3,5), bạn nhập lại giúp mình nhé.",
        Reason.OUT_OF_RANGE: "Số này nằm ngoài khoảng cho phép ({range}), bạn kiểm tra lại nhé.",
        Reason.BAD_EMAIL: "Email chưa đúng, bạn nhập lại giúp mình nhé (VD: ten@gmail.com).",
        Reason.BAD_PHONE: (
            "Số điện thoại chưa đúng, bạn nhập lại số điện thoại Việt Nam giúp mình nhé "
            "(VD: 0912345678)."
        ),
        Reason.BAD_CCCD: (
            "Số căn cước công dân gồm đúng 12 chữ số (VD: 079203001234), bạn kiểm tra lại nhé."
        ),
        Reason.BAD_CCCD_PROVINCE: (
            "Ba số đầu của số căn cước công dân là mã tỉnh, thành phố nơi đăng ký khai sinh "
            "(từ 001 đến 096), số bạn nhập không khớp. Bạn kiểm tra lại nhé."
        ),
        Reason.BAD_DATE: "Ngày chưa đúng, bạn nhập theo dạng ngày/tháng/năm nhé (VD: 15/09/2003).",
        Reason.DATE_OUT_OF_RANGE: (
            "Ngày này nằm ngoài khoảng cho phép ({range}), bạn kiểm tra lại nhé."
        ),
        Reason.NO_CHOICE: "Bạn chọn một trong các nút bên dưới nhé (hoặc gõ số thứ tự).",
        Reason.NOT_YES_NO: "Bạn trả lời “có” hoặc “không” giúp mình nhé.",
        Reason.UNIT_AMBIGUOUS: (
            "Mình thấy vài đơn vị gần giống, bạn chọn đúng đơn vị của mình nhé:\n{suggestions}"
        ),
        Reason.UNIT_UNKNOWN: (
            "Mình chưa tìm thấy đơn vị này, bạn gõ đầy đủ tên đơn vị nhé "
            "(VD: Đoàn phường Hòa Thạnh)."
        ),
        Reason.STICKER: "Bạn vừa gửi nhãn dán (sticker), mình cần {need} nhé.",
        Reason.TEXT_NOT_MEDIA: (
            "Mình cần {need}, không phải chữ. Bạn bấm biểu tượng ảnh/tệp để gửi giúp mình nhé."
        ),
        Reason.NOT_IMAGE: ("Tệp bạn gửi không phải là ảnh. Mình cần {need} (JPG hoặc PNG) nhé."),
        Reason.MEDIA_NOT_TEXT: "Bạn vừa gửi ảnh hoặc tệp, mình cần {need} nhé.",
        Reason.LOCATION: "Mình chưa dùng được vị trí bạn gửi, mình cần {need} nhé.",
        Reason.UNSUPPORTED: "Mình chưa đọc được loại tin nhắn này, mình cần {need} nhé.",
    }
)


def _number(value: float | None) -> str:
    if value is None:
        return ""
    text = str(int(value)) if float(value).is_integer() else str(value).replace(".", ",")
    return text


def reason_text(
    reason: Reason,
    kind: ExpectKind,
    *,
    min: float | None = None,
    max: float | None = None,
    low: str | None = None,
    high: str | None = None,
    suggestions: tuple[tuple[str, str], ...] = (),
) -> str:
    """The built-in Vietnamese explanation of why an answer was not accepted."""
    if low is None and min is not None:
        low = _number(min)
    if high is None and max is not None:
        high = _number(max)
    if low and high:
        span = f"từ {low} đến {high}"
    elif low:
        span = f"từ {low} trở lên"
    elif high:
        span = f"tối đa {high}"
    else:
        span = ""
    listed = "\n".join(f"{i}. {name}" for i, (_, name) in enumerate(suggestions, 1))
    return REASONS[reason].format(
        need=NEEDS[kind],
        min=_number(min),
        max=_number(max) if max is not None else str(TEXT_MAX),
        range=span,
        suggestions=listed,
    )
