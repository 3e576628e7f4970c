"""The per-conversation state: a tiny mutable object, the model the flow machines move.

One `Session` lives per conversation (district, channel, user). It is stored between messages as
compact JSON (`dumps`/`loads`, short keys, defaults omitted) — in Redis that is one small value
per conversation with a TTL. What must outlive it (the profile, submissions) is a record; the
session keeps only what the conversation needs to continue and what later flows depend on.
"""

from __future__ import annotations

import enum
from typing import Any

import orjson

from flows.events import RecordEvent
from flows.vocab import Outbound

FORMAT = 1  # bump when the stored shape changes; `loads` migrates older formats


class Mode(enum.Enum):
    """What the conversation is doing besides running its flow."""

    NORMAL = "n"
    EDIT = "e"  # "sửa thông tin": re-running the registration with current values shown
    DELETE = "d"  # "xóa dữ liệu của tôi": waiting for the yes/no confirmation
    FIX = "x"  # re-sending an evidence item an organiser rejected


class SessionFormatError(ValueError):
    """Stored bytes are not a session this code can read (corrupt or from the future)."""


class Session:
    __slots__ = (
        "certs",
        "consent",
        "data",
        "done",
        "events",
        "flow",
        "mode",
        "outbox",
        "paused",
        "profile",
        "ref",
        "retries",
        "stack",
        "state",
        "subs",
        "version",
    )

    def __init__(
        self,
        *,
        state: str | None = None,
        flow: str | None = None,
        version: str | None = None,
        data: dict[str, Any] | None = None,
        profile: dict[str, str] | None = None,
        retries: int = 0,
        ref: str | None = None,
        consent: bool | None = None,
        done: list[str] | None = None,
        subs: dict[str, str] | None = None,
        paused: bool = False,
        mode: Mode = Mode.NORMAL,
        stack: list[str] | None = None,
        certs: list[dict[str, str]] | None = None,
    ) -> None:
        self.state = state  # current step id (a machine state), None when idle
        self.flow = flow  # current flow id, None when idle
        self.version = version  # content hash of the flow version the run started on
        # Answers of the current run (field → value, evidence key → media ref). Values are
        # strings; an answer held back until consent is a small dict (see engine).
        self.data: dict[str, Any] = data if data is not None else {}
        # Recorded profile fields that later flows use ({ho_ten}, "sửa thông tin").
        self.profile: dict[str, str] = profile if profile is not None else {}
        self.retries = retries  # invalid answers to the current question
        self.ref = ref  # the referral code the person entered with
        self.consent = consent  # None: never asked; True/False: the last answer
        self.done: list[str] = done if done is not None else []  # finished required flows
        self.subs: dict[str, str] = subs if subs is not None else {}  # campaign → wave name
        self.paused = paused  # handed over to a human: the bot stays silent
        self.mode = mode
        self.stack: list[str] = stack if stack is not None else []  # flows to run next
        # Approved campaigns waiting for the person to confirm the name on the certificate,
        # oldest first: {"c": campaign, "n": name as printed, "i": submission id, "s": "c"
        # (asked to confirm) | "n" (asked to type the name)}. Kept whatever flow runs.
        self.certs: list[dict[str, str]] = certs if certs is not None else []
        # Transient: what this turn produced. Never stored.
        self.outbox: list[Outbound] = []
        self.events: list[RecordEvent] = []

    def copy(self) -> Session:
        """An independent copy (the engine works on one so a failed turn changes nothing)."""
        return Session(
            state=self.state,
            flow=self.flow,
            version=self.version,
            data=dict(self.data),
            profile=dict(self.profile),
            retries=self.retries,
            ref=self.ref,
            consent=self.consent,
            done=list(self.done),
            subs=dict(self.subs),
            paused=self.paused,
            mode=self.mode,
            stack=list(self.stack),
            certs=[dict(c) for c in self.certs],
        )

    def is_blank(self) -> bool:
        """Nothing worth storing: the caller may delete the conversation's session."""
        return (
            self.state is None
            and self.flow is None
            and not self.data
            and not self.profile
            and self.ref is None
            and self.consent is None
            and not self.done
            and not self.subs
            and not self.paused
            and self.mode is Mode.NORMAL
            and not self.stack
            and not self.certs
        )

    def value(self, name: str) -> Any:
        """A saved value: this run's answer first, else the remembered profile."""
        found = self.data.get(name)
        return self.profile.get(name) if found is None else found

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        return _pack(self) == _pack(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Session({_pack(self)!r})"


def _pack(s: Session) -> dict[str, Any]:
    out: dict[str, Any] = {"v": FORMAT}
    if s.state is not None:
        out["s"] = s.state
    if s.flow is not None:
        out["f"] = s.flow
    if s.version is not None:
        out["h"] = s.version
    if s.data:
        out["d"] = s.data
    if s.profile:
        out["p"] = s.profile
    if s.retries:
        out["r"] = s.retries
    if s.ref is not None:
        out["e"] = s.ref
    if s.consent is not None:
        out["c"] = 1 if s.consent else 0
    if s.done:
        out["n"] = s.done
    if s.subs:
        out["b"] = s.subs
    if s.paused:
        out["z"] = 1
    if s.mode is not Mode.NORMAL:
        out["m"] = s.mode.value
    if s.stack:
        out["k"] = s.stack
    if s.certs:
        out["q"] = s.certs
    return out


def dumps(session: Session) -> bytes:
    """Compact JSON with one-letter keys; defaults are omitted. `{"v":1}` is an empty session."""
    return orjson.dumps(_pack(session))


_MODES = {m.value: m for m in Mode}


def loads(raw: bytes | str) -> Session:
    """The session stored by `dumps`. Raises `SessionFormatError` on bytes it cannot read."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise SessionFormatError(f"not JSON: {err}") from None
    if not isinstance(d, dict):
        raise SessionFormatError("not a JSON object")
    if d.get("v") != FORMAT:
        raise SessionFormatError(f"unknown session format {d.get('v')!r}")
    # On the hot path (one load per message): plain gets, type checks only where a wrong type
    # would break the engine later.
    try:
        consent = d.get("c")
        mode = _MODES[d.get("m", "n")]
        return Session(
            state=_opt_str(d.get("s")),
            flow=_opt_str(d.get("f")),
            version=_opt_str(d.get("h")),
            data=_dict(d.get("d")),
            profile=_dict(d.get("p")),
            retries=int(d.get("r", 0)),
            ref=_opt_str(d.get("e")),
            consent=None if consent is None else bool(consent),
            done=_list(d.get("n")),
            subs=_dict(d.get("b")),
            paused=bool(d.get("z", 0)),
            mode=mode,
            stack=_list(d.get("k")),
            certs=_certs(d.get("q")),
        )
    except (TypeError, ValueError, KeyError) as err:
        raise SessionFormatError(f"bad session field: {err!r}") from None


def _dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise TypeError("expected a list of strings")
    return value


def _certs(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(c, dict) and all(isinstance(v, str) for v in c.values()) for c in value
    ):
        raise TypeError("expected a list of objects of strings")
    return value


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


__all__ = ["FORMAT", "Mode", "Session", "SessionFormatError", "dumps", "loads"]
