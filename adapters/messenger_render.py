"""Rendering an `Outbound` into Messenger Send API `message` objects, within the platform's limits.

Pure functions, no I/O: `render` returns the `message` objects in the order they must be sent;
the adapter wraps each one with the recipient and `messaging_type` and POSTs it.

Degradation of choices (see docs/kenh-messenger.md):

1. at most 3 choices whose titles fit 20 characters, text ≤ 640, no media → button template
   (postback buttons stay tappable in the thread's history);
2. at most 13 choices whose titles fit → quick replies on the last message;
3. at most 13 choices with a title too long → the full titles as a numbered list, plus quick
   replies titled "1", "2", … carrying the real payloads;
4. more than 13 (or a payload Messenger cannot carry) → the numbered list only; the person
   answers with the number or the words, which the engine matches against the choices in order.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

from adapters.textsplit import HINT_NUMBERED, nfc, numbered, split_text, units
from flows.vocab import Choice, Outbound

MAX_TEXT = 2000  # characters of `message.text`
MAX_TEMPLATE_TEXT = 640  # characters of a button template's text
MAX_BUTTONS = 3
MAX_QUICK_REPLIES = 13
MAX_TITLE = 20  # button and quick-reply titles (Messenger truncates longer ones)
MAX_PAYLOAD = 1000  # postback / quick-reply payload

DEFAULT_PROMPT = "Bạn chọn một mục bên dưới nhé:"
HINT_NUMBERED_TAP = "Bạn bấm số thứ tự bên dưới hoặc gõ tên lựa chọn nhé."

Message = dict[str, Any]


class ChoiceStyle(enum.Enum):
    NONE = "none"
    BUTTONS = "buttons"
    QUICK_REPLIES = "quick_replies"
    NUMBERED_QUICK_REPLIES = "numbered_quick_replies"  # numbered list + "1", "2", … taps
    NUMBERED = "numbered"


def _payload_fits(payload: str) -> bool:
    return 0 < len(payload) <= MAX_PAYLOAD


def choice_style(choices: Sequence[Choice], *, template_ok: bool) -> ChoiceStyle:
    """How `choices` can be shown; `template_ok` says whether a button template may carry them
    (text short enough, nothing else attached)."""
    if not choices:
        return ChoiceStyle.NONE
    if len(choices) > MAX_QUICK_REPLIES or not all(_payload_fits(c.payload) for c in choices):
        return ChoiceStyle.NUMBERED
    if not all(0 < len(c.title) <= MAX_TITLE for c in choices):
        return ChoiceStyle.NUMBERED_QUICK_REPLIES
    if len(choices) <= MAX_BUTTONS and template_ok:
        return ChoiceStyle.BUTTONS
    return ChoiceStyle.QUICK_REPLIES


def _quick_replies(choices: Sequence[Choice], *, by_number: bool) -> list[dict[str, str]]:
    return [
        {
            "content_type": "text",
            "title": str(number) if by_number else choice.title,
            "payload": choice.payload,
        }
        for number, choice in enumerate(choices, start=1)
    ]


def _button_template(text: str, choices: Sequence[Choice]) -> Message:
    buttons = [{"type": "postback", "title": c.title, "payload": c.payload} for c in choices]
    return {
        "attachment": {
            "type": "template",
            "payload": {"template_type": "button", "text": text, "buttons": buttons},
        }
    }


def _media(kind: str, url: str) -> Message:
    return {"attachment": {"type": kind, "payload": {"url": url, "is_reusable": True}}}


def _nfc(choice: Choice) -> Choice:
    return Choice(nfc(choice.title).strip(), nfc(choice.payload))


def render(message: Outbound, *, media_url: Callable[[str], str], metadata: str) -> list[Message]:
    """The Send API `message` objects for one `Outbound`, in sending order.

    Order: the text (split), then the image, then the file; choices ride on the last message
    (or, as a numbered list, follow the media). `metadata` marks every message as Loa's own so
    its echo is recognised. `media_url` turns an `Outbound.image`/`file` reference into a URL
    Meta can fetch.
    """
    text = nfc(message.text).strip()
    choices = [_nfc(choice) for choice in message.choices]
    media = [_media("image", media_url(message.image))] if message.image else []
    if message.file:
        media.append(_media("file", media_url(message.file)))
    if choices and not text and not media:
        text = DEFAULT_PROMPT
    parts = split_text(text, MAX_TEXT)
    style = choice_style(
        choices, template_ok=not media and bool(parts) and units(parts[-1]) <= MAX_TEMPLATE_TEXT
    )
    listing: list[str] = []
    if style in (ChoiceStyle.NUMBERED, ChoiceStyle.NUMBERED_QUICK_REPLIES):
        hint = HINT_NUMBERED if style is ChoiceStyle.NUMBERED else HINT_NUMBERED_TAP
        if media:
            listing = split_text(numbered("", choices, hint), MAX_TEXT)
        else:  # the question and its options read as one text, split only if too long
            parts = split_text(numbered(text, choices, hint), MAX_TEXT)

    out: list[Message] = [{"text": part} for part in parts] + media
    out += [{"text": part} for part in listing]
    if style is ChoiceStyle.BUTTONS:
        out[-1] = _button_template(parts[-1], choices)
    elif style in (ChoiceStyle.QUICK_REPLIES, ChoiceStyle.NUMBERED_QUICK_REPLIES):
        out[-1]["quick_replies"] = _quick_replies(
            choices, by_number=style is ChoiceStyle.NUMBERED_QUICK_REPLIES
        )
    for item in out:
        item["metadata"] = metadata
    return out


__all__ = [
    "DEFAULT_PROMPT",
    "HINT_NUMBERED_TAP",
    "MAX_BUTTONS",
    "MAX_PAYLOAD",
    "MAX_QUICK_REPLIES",
    "MAX_TEMPLATE_TEXT",
    "MAX_TEXT",
    "MAX_TITLE",
    "ChoiceStyle",
    "choice_style",
    "render",
]
