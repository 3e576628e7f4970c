"""The conversation engine: pure `(session, inbound, now) → (session', outbound, events)`.

No I/O. Each call copies the session, moves it through the compiled flow machines model-less
(`machine.events[name].trigger(session, rt=…)`), and returns what to send and what to record.
It never raises: an unexpected error gives a Vietnamese apology, the unchanged session and the
error in `Turn.error` for the caller to log. Decisions are written down in docs/engine.md.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from flows import messages as msg
from flows.compiler import (
    END,
    FLOW_PREFIX,
    START,
    CompiledBundle,
    CompiledFlow,
    CompiledStep,
    District,
    StepKind,
    parse_payload,
)
from flows.events import (
    CertificateRequested,
    ConsentRecorded,
    DataDeletionRequested,
    EntryReported,
    EvidenceSaved,
    FieldSaved,
    FlowFinished,
    HandoverRequested,
    OrganisersNotified,
    RecordEvent,
    ReferralRecorded,
    SubmissionSubmitted,
    Tagged,
    citizen_id_hash,
)
from flows.schema import ActionKind, Campaign, ExpectKind, Wave
from flows.session import Mode, Session
from flows.steps import MENU
from flows.text import Command, fold, match_command, match_yes_no
from flows.validators import (
    KIND_MISMATCH,
    NO_VALUE,
    YES_VALUE,
    Invalid,
    Reason,
    Valid,
    validate,
)
from flows.vocab import Attachment, Choice, Inbound, InboundKind, NoticeKind, Outbound

try:
    from zoneinfo import ZoneInfo

    LOCAL_TZ: tzinfo = ZoneInfo("Asia/Ho_Chi_Minh")
except Exception:  # no tz database: Vietnam has kept UTC+7 without DST since 1975
    LOCAL_TZ = timezone(timedelta(hours=7))

MAX_HOPS = 200  # transitions per turn: a goto cycle of say steps must not spin forever
MAX_STACK = 4  # flows waiting for a required flow to finish

CMD_PREFIX = "cmd:"  # payloads of Loa's own buttons
KEEP_PAYLOAD = "cmd:keep"
DELETE_YES_PAYLOAD = "cmd:delete-yes"
DELETE_NO_PAYLOAD = "cmd:delete-no"
UNIT_PAYLOAD = "u:"

MENU_BUTTON = Choice(msg.MENU_TITLE, CMD_PREFIX + Command.MENU.value)
HELP_BUTTON = Choice(msg.HELP_TITLE, CMD_PREFIX + Command.HELP.value)
KEEP_BUTTON = Choice(msg.KEEP_TITLE, KEEP_PAYLOAD)
DELETE_BUTTONS = (
    Choice(msg.DELETE_YES_TITLE, DELETE_YES_PAYLOAD),
    Choice(msg.DELETE_NO_TITLE, DELETE_NO_PAYLOAD),
)
_KEEP_WORDS = frozenset(fold(w) for w in (*msg.KEEP_WORDS, msg.KEEP_TITLE))
_DELETE_YES = fold(msg.DELETE_YES_TITLE)

SYSTEM_RESUME = "resume"
SYSTEM_APPROVE = "approve"
SYSTEM_REJECT = "reject"
SYSTEM_CERTIFICATE = "certificate"  # a drawn certificate to hand over (bots/certificates)

CERT_YES_PAYLOAD = "cmd:cert-yes"
CERT_EDIT_PAYLOAD = "cmd:cert-edit"
CERT_BUTTONS = (
    Choice(msg.CERT_YES_TITLE, CERT_YES_PAYLOAD),
    Choice(msg.CERT_EDIT_TITLE, CERT_EDIT_PAYLOAD),
)
_CERT_YES = frozenset(fold(w) for w in msg.CERT_YES_WORDS)
_CERT_EDIT = frozenset(fold(w) for w in msg.CERT_EDIT_WORDS)
# Profile fields that hold the person's full name (as the records writer copies them).
NAME_FIELDS = ("ho_ten", "ho_va_ten", "name", "full_name")
NAME_MIN, NAME_MAX = 4, 60

REPORTED = "Mình đã ghi nhận."  # action: report without its own `say`


@dataclass(frozen=True, slots=True)
class Turn:
    """What one inbound message produced. `session` None: nothing to keep (delete it)."""

    session: Session | None
    outbound: tuple[Outbound, ...]
    events: tuple[RecordEvent, ...]
    error: BaseException | None = None  # an unexpected failure, for the caller to log


class FlowLoopError(RuntimeError):
    """A flow moved through too many steps in one turn (a goto cycle without a question)."""


class Engine:
    def __init__(
        self,
        bundle: CompiledBundle,
        archive: Mapping[tuple[str, str], CompiledFlow] | None = None,
        *,
        citizen_key: bytes | None = None,
    ) -> None:
        self.bundle = bundle
        # Older flow versions that sessions may still be on: (flow id, version) → compiled.
        self.archive: Mapping[tuple[str, str], CompiledFlow] = archive or {}
        # The secret for citizen-ID numbers reported with `action: report` (configuration, not
        # state): with it a reported cccd is hashed the moment it is answered and the session
        # never holds the digits; without it the digits wait in the session for the entry and
        # the records writer hashes them (docs/bao-cao.md).
        self.citizen_key = citizen_key

    def handle(self, session: Session | None, inbound: Inbound, now: datetime) -> Turn:
        work = session.copy() if session is not None else None
        try:
            return _Run(self, inbound, now).handle(work)
        except Exception as err:  # never raise: apologise, keep the session, report the error
            return Turn(session, (Outbound(msg.ERROR, notice=NoticeKind.ERROR),), (), err)

    def flow_of(self, flow_id: str, version: str | None) -> CompiledFlow | None:
        """The compiled flow a session is on: the current bundle's or an archived version."""
        flow = self.bundle.flows.get(flow_id)
        if flow is not None and flow.version == version:
            return flow
        if version is None:
            return None
        return self.archive.get((flow_id, version))


def archive_of(*bundles: CompiledBundle) -> dict[tuple[str, str], CompiledFlow]:
    """An archive of every flow version in the given (older) bundles, for `Engine(archive=…)`."""
    return {(f.id, f.version): f for b in bundles for f in b.flows.values()}


class _Run:
    """One turn: the `Runtime` the machine callbacks call back into."""

    __slots__ = (
        "abandon",
        "bundle",
        "district",
        "ending",
        "engine",
        "flow",
        "halt",
        "hops",
        "inbound",
        "now",
        "pending",
    )

    def __init__(self, engine: Engine, inbound: Inbound, now: datetime) -> None:
        self.engine = engine
        self.bundle = engine.bundle
        self.inbound = inbound
        self.now = now
        self.district: District = engine.bundle.district(inbound.district)
        self.flow: CompiledFlow | None = None
        self.pending: tuple[str, dict[str, Any]] | None = None  # the event a step continues with
        self.abandon = False  # the run leaves its flow unfinished (consent refused, …)
        self.halt = False  # stop the flow here (campaign closed at submit)
        self.ending = False  # a step that continues to the end of the flow was entered
        self.hops = 0

    # -- entry ------------------------------------------------------------------------------

    def handle(self, s: Session | None) -> Turn:
        inbound = self.inbound
        kind = inbound.kind
        if kind is InboundKind.SYSTEM:
            return self.system(s)
        if s is None:
            s = Session()
        if s.paused:  # a person is handling the conversation: the bot stays silent
            return Turn(s, (), ())
        if kind is InboundKind.START:
            self.start(s)
            if s.certs:
                self.ask_certificate(s)
            return self.result(s)
        if s.mode is Mode.DELETE:
            return self.confirm_delete(s)
        if s.certs:  # an approval waits for the name to print: asked before anything else
            return self.certificate_reply(s)

        command: Command | None = None
        if kind is InboundKind.TEXT:
            command = match_command(inbound.text)
        elif kind is InboundKind.CHOICE and inbound.payload:
            command = _payload_command(inbound.payload)
        if command is not None and not self.is_current_button(s, inbound.text):
            self.command(s, command)
            return self.result(s)

        if s.flow is None:
            self.idle(s)
            return self.result(s)
        flow = self.current(s)
        if flow is None:  # restarted with a notice
            return self.result(s)
        step = flow.by_id.get(s.state or "")
        if step is None or not step.waits:
            if step is not None and step.action is ActionKind.HANDOVER:
                self.fire(s, "next")  # handed back: continue after the handover
                self.settle(s)
            else:
                self.restart(s, flow)
            return self.result(s)
        self.reply(s, flow, step)
        return self.result(s)

    def result(self, s: Session) -> Turn:
        out, events = tuple(s.outbox), tuple(s.events)
        s.outbox, s.events = [], []  # transient: they travel in the Turn, not the session
        return Turn(None if s.is_blank() else s, out, events)

    # -- starting flows ---------------------------------------------------------------------

    def menu_flow(self) -> str | None:
        menu = self.district.menu or self.bundle.menu
        return menu if menu in self.bundle.flows else next(iter(self.bundle.flows), None)

    def start(self, s: Session) -> None:
        """START (deep link, /start, Get Started): a link's flow, else the menu, from the top."""
        ref = self.inbound.ref
        _abandon(s)
        link = self.district.links.get(ref) if ref else None
        if link is not None:
            if link.code:
                s.ref = link.code
                s.events.append(ReferralRecorded(link.code, link.flow))
            self.start_flow(s, link.flow)
        elif ref and ref in self.bundle.flows:
            self.start_flow(s, ref)
        else:
            self.start_menu(s)

    def start_menu(self, s: Session) -> None:
        menu = self.menu_flow()
        if menu is None:
            self.say(s, msg.NO_FLOWS)
            return
        self.start_flow(s, menu)

    def start_flow(
        self, s: Session, flow_id: str, *, at: str | None = None, requires: bool = True
    ) -> None:
        """Begin a run of a flow (its current version) at its first step, or at `at`."""
        flow = self.bundle.flows.get(flow_id)
        if flow is None and flow_id == MENU:  # `goto: menu` without a flow of that name
            self.start_menu(s)
            return
        if flow is None:
            menu = self.menu_flow()
            self.say(s, msg.FLOW_GONE)
            _abandon(s)
            if menu is not None and menu != flow_id:
                self.start_flow(s, menu)
            return
        closed = self.closed_text(flow)
        if closed is not None:
            _abandon(s)
            self.say(s, closed, (MENU_BUTTON,))
            return
        if requires:
            seen = {flow.id}
            while flow.requires and flow.requires not in s.done and flow.requires not in seen:
                required = self.bundle.flows.get(flow.requires)
                if required is None:
                    break
                if flow.id not in s.stack and len(s.stack) < MAX_STACK:
                    s.stack.append(flow.id)
                self.say(s, msg.REQUIRES_FIRST.format(title=required.title))
                seen.add(required.id)
                flow, at = required, None
        s.flow, s.version, s.state = flow.id, flow.version, START
        s.data = {}
        s.retries = 0
        self.flow = flow
        self.fire(s, "enter:" + (at or flow.first))
        self.settle(s)

    def restart(self, s: Session, flow: CompiledFlow) -> None:
        self.say(s, msg.VERSION_RESTART.format(title=flow.title))
        s.mode = Mode.NORMAL
        self.start_flow(s, flow.id, requires=False)

    def current(self, s: Session) -> CompiledFlow | None:
        """The session's compiled flow version; if it is gone, restart (with a notice)."""
        assert s.flow is not None
        flow = self.engine.flow_of(s.flow, s.version)
        if flow is not None and (s.state in flow.by_id):
            self.flow = flow
            return flow
        latest = self.bundle.flows.get(s.flow)
        if latest is not None:
            self.restart(s, latest)
        else:
            self.say(s, msg.FLOW_GONE)
            _abandon(s)
            self.start_menu(s)
        return None

    def idle(self, s: Session) -> None:
        """A message outside any flow: an old button picks again, anything else opens the menu."""
        inbound = self.inbound
        if inbound.kind is InboundKind.CHOICE and inbound.payload:
            hit = self.bundle.payloads.get(inbound.payload)
            if hit is not None and self.jump_pick(s, *hit):
                return
        self.start_menu(s)

    def jump_pick(self, s: Session, flow_id: str, step_id: str, n: int) -> bool:
        """Pick button `n` of a choose-like step the person saw earlier (an older message)."""
        flow = self.bundle.flows.get(flow_id)
        step = flow.by_id.get(step_id) if flow is not None else None
        if flow is None or step is None or step.matcher is None or not 1 <= n <= len(step.choices):
            return False
        _abandon(s)
        s.flow, s.version, s.state = flow.id, flow.version, step.id
        self.flow = flow
        self.pick(s, step, n - 1)
        return True

    # -- the machine ------------------------------------------------------------------------

    def fire(self, s: Session, event: str, **kwargs: Any) -> None:
        self.hops += 1
        if self.hops > MAX_HOPS:
            raise FlowLoopError(f"flow {s.flow!r} passed {MAX_HOPS} steps in one turn")
        assert self.flow is not None
        self.flow.machine.events[event].trigger(s, rt=self, **kwargs)

    def settle(self, s: Session) -> None:
        """Continue through steps that do not wait (say, branch, action, end) and flow exits."""
        while True:
            if self.halt:
                self.halt = False
                self.finish(s, finished=False)
                return
            state = s.state or ""
            if state == END or self.ending:
                self.ending = False
                self.finish(s, finished=not self.abandon)
                return
            if state.startswith(FLOW_PREFIX):
                self.handoff(s, state[len(FLOW_PREFIX) :])
                return
            pending = self.pending
            if pending is None:
                return
            self.pending = None
            self.fire(s, pending[0], **pending[1])

    def finish(self, s: Session, *, finished: bool) -> None:
        """The run is over: record it, forget its answers, continue with a waiting flow."""
        flow = self.flow
        assert flow is not None
        editing = s.mode is Mode.EDIT
        if finished:
            if not editing:
                s.events.append(FlowFinished(flow.id))
            if flow.id in self.bundle.required and flow.id not in s.done:
                s.done.append(flow.id)
        if editing:
            self.say(s, msg.EDIT_DONE)
        _abandon(s, keep_stack=finished)
        if finished and s.stack:
            self.start_flow(s, s.stack.pop())

    def handoff(self, s: Session, target: str) -> None:
        """The run leaves for another flow (a button, `goto`, `action: goto`)."""
        flow = self.flow
        assert flow is not None
        finished = not self.abandon
        editing = s.mode is Mode.EDIT
        if finished:
            if not editing:
                s.events.append(FlowFinished(flow.id))
            if flow.id in self.bundle.required and flow.id not in s.done:
                s.done.append(flow.id)
        if editing:
            self.say(s, msg.EDIT_DONE)
        if finished and s.stack and s.stack[-1] == target:
            s.stack.pop()
        _abandon(s, keep_stack=finished)
        self.abandon = False
        self.start_flow(s, target)

    # -- Runtime: called by the machine callbacks ---------------------------------------------

    def enter(self, step: CompiledStep, s: Session) -> None:
        self.abandon = False
        s.retries = 0
        kind = step.kind
        if kind is StepKind.ASK or kind is StepKind.EVIDENCE:
            if s.mode is Mode.EDIT and (not step.save or (step.consent and s.consent)):
                self.pending = ("answer", {"result": None})  # nothing to re-ask: keep it
                return
            self.prompt(s, step)
        elif kind is StepKind.SAY:
            if s.mode is Mode.EDIT:
                self.proceed(step)
                return
            self.prompt(s, step)
            if step.matcher is None:
                self.proceed(step)
        elif kind is StepKind.CHOOSE:
            self.prompt(s, step)
        elif kind is StepKind.BRANCH:
            self.pending = ("next", {})
        elif kind is StepKind.ACTION:
            self.act(s, step)
        else:  # END
            if step.text is not None and s.mode is not Mode.EDIT:
                self.say(s, self.render(step.text, s))
            self.ending = True

    def proceed(self, step: CompiledStep) -> None:
        """Continue after a step that does not wait. Straight to the end of the flow needs no
        transition (one trigger less on the hot path); anything else fires `next`."""
        if step.ends:
            self.ending = True
        else:
            self.pending = ("next", {})

    def answered(self, step: CompiledStep, s: Session, result: Valid | None) -> None:
        s.retries = 0
        if result is None:  # "giữ nguyên" while editing
            return
        flow = self.flow
        assert flow is not None
        if step.consent:
            assert step.save is not None
            s.data[step.save] = result.value
            first = s.consent is not True
            s.consent = True
            s.events.append(ConsentRecorded(True, self.render(step.text, s)))
            if first:
                self.release_held(s, flow)
            return
        held = flow.consent_step is not None and s.consent is not True
        if step.evidence is not None:
            attachment = result.extra if isinstance(result.extra, Attachment) else None
            text = None if attachment is not None else result.value
            if held:
                s.data[step.evidence] = _hold_evidence(text, attachment)
            else:
                s.data[step.evidence] = result.value
                s.events.append(
                    EvidenceSaved(flow.campaign or flow.id, step.evidence, text, attachment)
                )
            return
        if step.save:
            before = s.value(step.save)
            value = result.value
            key = self.engine.citizen_key
            if key is not None and step.save in flow.protected:
                value = citizen_id_hash(key, value)
            s.data[step.save] = value
            if not held and not (s.mode is Mode.EDIT and before == value):
                self.record_field(s, flow, step.save, value)

    def refused(self, step: CompiledStep, s: Session, result: Valid) -> None:
        s.retries = 0
        flow = self.flow
        assert flow is not None
        if step.consent:
            s.consent = False
            s.events.append(ConsentRecorded(False, self.render(step.text, s)))
            for name in (*flow.profile_fields, *flow.evidence):
                s.data.pop(name, None)  # nothing given before the refusal is kept
            text = self.render(step.no_text, s) if step.no_text else msg.CONSENT_REFUSED
            self.say(s, text)
        else:
            if step.save:
                s.data[step.save] = result.value
                if flow.consent_step is None or s.consent is True:
                    self.record_field(s, flow, step.save, result.value)
            if step.no_text is not None:
                self.say(s, self.render(step.no_text, s))
        self.abandon = step.no_abandons

    def retried(self, step: CompiledStep, s: Session, message: Outbound) -> None:
        s.outbox.append(message)

    # -- saving -------------------------------------------------------------------------------

    def record_field(self, s: Session, flow: CompiledFlow, name: str, value: str) -> None:
        if name in flow.entry_fields:
            return  # an answer for a reported entry, not the person's own profile
        s.events.append(FieldSaved(name, value))
        if flow.id in self.bundle.required:
            s.profile[name] = value  # later flows and "sửa thông tin" use it

    def release_held(self, s: Session, flow: CompiledFlow) -> None:
        """Consent was just given: record what was answered before the consent question."""
        for name in flow.profile_fields:
            value = s.data.get(name)
            if isinstance(value, str):
                self.record_field(s, flow, name, value)
        for key in flow.evidence:
            held = s.data.get(key)
            if isinstance(held, dict):
                text, attachment = _unhold_evidence(held)
                s.events.append(EvidenceSaved(flow.campaign or flow.id, key, text, attachment))
                s.data[key] = text if attachment is None else _attachment_ref(attachment)

    # -- answers ------------------------------------------------------------------------------

    def reply(self, s: Session, flow: CompiledFlow, step: CompiledStep) -> None:
        """The person answered the step the session waits on."""
        inbound = self.inbound
        payload = inbound.payload if inbound.kind is InboundKind.CHOICE else None
        if payload and self.reply_payload(s, flow, step, payload):
            return
        if step.matcher is not None:  # choose, say with buttons
            if inbound.kind not in (InboundKind.TEXT, InboundKind.CHOICE):
                self.invalid(s, step, _kind_reason(inbound.kind))
                return
            index = step.matcher.match(inbound.text)
            if index is None:
                self.invalid(s, step, Invalid(Reason.NO_CHOICE))
            else:
                self.pick(s, step, index)
            return
        assert step.expect is not None
        if (
            s.mode is Mode.EDIT
            and inbound.kind is InboundKind.TEXT
            and fold(inbound.text) in _KEEP_WORDS
            and step.save
            and s.value(step.save) is not None
        ):
            self.fire(s, "answer", result=None)
            self.settle(s)
            return
        result = validate(step.expect, inbound, self.district.units)
        if isinstance(result, Invalid):
            self.invalid(s, step, result)
        else:
            self.accept(s, flow, step, result)

    def reply_payload(
        self, s: Session, flow: CompiledFlow, step: CompiledStep, payload: str
    ) -> bool:
        """A button press. False: not one of ours here, read the message as text instead."""
        if payload == KEEP_PAYLOAD and s.mode is Mode.EDIT and step.save:
            self.fire(s, "answer", result=None)
            self.settle(s)
            return True
        if payload.startswith(UNIT_PAYLOAD) and step.expect is not None:
            if step.expect.kind is not ExpectKind.UNIT:
                return False
            unit = _unit_of_payload(payload[len(UNIT_PAYLOAD) :], self.district.units)
            if unit is None:
                return False
            self.accept(s, flow, step, Valid(unit[0], unit[1]))
            return True
        parsed = parse_payload(payload)
        if parsed is None:
            return False
        flow_key, step_key, n = parsed
        if flow_key == flow.payload_key and step_key == step.payload_key:
            if not 1 <= n <= len(step.choices):
                return False
            if step.matcher is not None:
                self.pick(s, step, n - 1)
                return True
            assert step.expect is not None
            title = step.choices[n - 1].title
            if step.expect.kind is ExpectKind.YES_NO:
                result = Valid(YES_VALUE if n == 1 else NO_VALUE, n == 1)
            else:
                result = Valid(title, n - 1)
            self.accept(s, flow, step, result)
            return True
        # A button of an earlier message: navigation buttons still work from anywhere; an old
        # answer button is not an answer to this question (its title would be misread).
        hit = self.bundle.payloads.get(payload)
        if hit is not None and self.jump_pick(s, *hit):
            return True
        self.say(s, msg.STALE_BUTTON)
        self.prompt(s, step)
        return True

    def accept(self, s: Session, flow: CompiledFlow, step: CompiledStep, result: Valid) -> None:
        if s.mode is Mode.FIX and step.kind is StepKind.EVIDENCE:
            # Re-sending a rejected item: save it, then straight to submitting again.
            s.mode = Mode.NORMAL
            submit = flow.submit_after.get(step.id)
            if submit is not None:
                self.answered(step, s, result)
                s.state = START
                self.fire(s, "enter:" + submit)
                self.settle(s)
                return
        if step.expect is not None and step.expect.kind is ExpectKind.YES_NO and not result.extra:
            self.fire(s, "no", result=result)
        else:
            self.fire(s, "answer", result=result)
        self.settle(s)

    def pick(self, s: Session, step: CompiledStep, index: int) -> None:
        s.retries = 0
        self.fire(s, f"pick_{index + 1}")
        self.settle(s)

    def invalid(self, s: Session, step: CompiledStep, result: Invalid) -> None:
        """Not accepted: say why (with the buttons again); after max_retries offer a way out."""
        reason = result.reason
        need = step.expect.kind if step.expect is not None else ExpectKind.CHOICE
        if step.retry is not None and reason not in KIND_MISMATCH:
            text = self.render(step.retry, s)
        else:
            expect = step.expect
            text = msg.reason_text(
                reason,
                need,
                min=expect.min if expect is not None else None,
                max=expect.max if expect is not None else None,
                low=_date_text(expect.min_date) if expect is not None else None,
                high=_date_text(expect.max_date) if expect is not None else None,
                suggestions=result.suggestions,
            )
        buttons = step.buttons
        if result.suggestions:
            buttons = tuple(Choice(name, _unit_payload(slug)) for slug, name in result.suggestions)
        s.retries += 1
        if s.retries >= step.max_retries:
            s.retries = 0
            message = Outbound(
                f"{text}\n\n{msg.WAY_OUT}",
                (*buttons, MENU_BUTTON, HELP_BUTTON),
                notice=NoticeKind.HELP,
            )
        else:
            message = Outbound(text, buttons, notice=NoticeKind.RETRY)
        self.fire(s, "retry", message=message)

    # -- actions ------------------------------------------------------------------------------

    def act(self, s: Session, step: CompiledStep) -> None:
        flow = self.flow
        assert flow is not None
        action = step.action
        said = self.render(step.text, s) if step.text is not None else None
        if action is ActionKind.SUBMIT:
            campaign_id = flow.campaign or flow.id
            campaign = self.bundle.campaigns.get(campaign_id)
            wave: str | None = None
            if campaign is not None and campaign.waves:
                current = self.wave(campaign)
                if current is None:
                    self.say(s, self.closed_message(campaign, flow.title), (MENU_BUTTON,))
                    self.halt = True
                    return
                wave = current
            s.events.append(SubmissionSubmitted(campaign_id, wave))
            s.subs[campaign_id] = wave or ""
            self.say(s, said or msg.SUBMITTED)
        elif action is ActionKind.NOTIFY:
            text = self.render(step.notify, s) if step.notify else None
            s.events.append(OrganisersNotified(text or msg.NOTIFY_DEFAULT.format(flow=flow.title)))
            if said:
                self.say(s, said)
        elif action is ActionKind.TAG:
            assert step.tag is not None
            s.events.append(Tagged(step.tag))
            if said:
                self.say(s, said)
        elif action is ActionKind.REFERRAL:
            if s.ref:
                s.events.append(ReferralRecorded(s.ref, flow.id))
            if said:
                self.say(s, said)
        elif action is ActionKind.REPORT:
            if not self.report(s, flow, step):
                return
            self.say(s, said or REPORTED)
        elif action is ActionKind.HANDOVER:
            reason = self.render(step.notify, s) if step.notify else flow.title
            s.events.append(HandoverRequested(reason))
            self.say(s, said or msg.HANDOVER)
            s.paused = True
            return  # stays on this step until an organiser hands back ("resume")
        elif said:  # goto
            self.say(s, said)
        self.proceed(step)

    def report(self, s: Session, flow: CompiledFlow, step: CompiledStep) -> bool:
        """`action: report`: record the run's answers as one entry, then forget the answers of
        the loop so the next entry starts fresh. False: the campaign closed meanwhile."""
        campaign = self.bundle.campaigns.get(flow.campaign or "")
        wave: str | None = None
        if campaign is not None and campaign.waves:
            wave = self.wave(campaign)
            if wave is None:
                self.say(s, self.closed_message(campaign, flow.title), (MENU_BUTTON,))
                self.halt = True
                return False
        fields = tuple(
            (name, value)
            for name in flow.entry_fields
            if isinstance(value := s.data.get(name), str) and value != ""
        )
        if fields:
            s.events.append(
                EntryReported(
                    kind=step.report or flow.id,
                    flow=flow.id,
                    fields=fields,
                    protected=tuple(name for name, _ in fields if name in flow.protected),
                    campaign=flow.campaign,
                    wave=wave,
                    ref=s.ref,
                )
            )
        for name in step.clears:
            s.data.pop(name, None)
        return True

    # -- waves --------------------------------------------------------------------------------

    def local_date(self) -> date:
        now = self.now if self.now.tzinfo is not None else self.now.replace(tzinfo=UTC)
        return now.astimezone(LOCAL_TZ).date()

    def open_wave(self, campaign: Campaign) -> Wave | None:
        today = self.local_date()
        for wave in campaign.waves:
            if wave.from_ <= today <= wave.to:
                return wave
        return None

    def wave(self, campaign: Campaign) -> str | None:
        wave = self.open_wave(campaign)
        return wave.name if wave is not None else None

    def closed_text(self, flow: CompiledFlow) -> str | None:
        """The campaign's closed message when the flow's campaign has no open wave today."""
        if flow.campaign is None:
            return None
        campaign = self.bundle.campaigns.get(flow.campaign)
        if campaign is None or not campaign.waves or self.wave(campaign) is not None:
            return None
        return self.closed_message(campaign, flow.title)

    def closed_message(self, campaign: Campaign, title: str) -> str:
        if campaign.closed:
            return campaign.closed
        windows = "; ".join(
            f"{w.name}: {_date_text(w.from_)} – {_date_text(w.to)}" for w in campaign.waves
        )
        return msg.CLOSED.format(title=campaign.title or title, windows=windows)

    # -- global commands ----------------------------------------------------------------------

    def is_current_button(self, s: Session, text: str) -> bool:
        """A button of the step being asked wins over a global command of the same words."""
        if s.flow is None or not text:
            return False
        flow = self.engine.flow_of(s.flow, s.version)
        step = flow.by_id.get(s.state or "") if flow is not None else None
        if step is None or not step.choices:
            return False
        folded = fold(text)
        return any(fold(c.title) == folded for c in step.choices)

    def command(self, s: Session, command: Command) -> None:
        if command is Command.MENU:
            _abandon(s)
            self.start_menu(s)
        elif command is Command.CANCEL:
            _abandon(s)
            self.say(s, msg.CANCELLED, (MENU_BUTTON,))
        elif command is Command.HELP:
            self.say(s, msg.HELP, (MENU_BUTTON,), NoticeKind.HELP)
            self.reprompt(s)
        elif command is Command.STATUS:
            self.say(s, self.status(s))
            self.reprompt(s)
        elif command is Command.EDIT:
            self.edit(s)
        else:  # DELETE
            s.mode = Mode.DELETE
            self.say(s, msg.DELETE_CONFIRM, DELETE_BUTTONS)

    def reprompt(self, s: Session) -> None:
        """Ask the current question again (after help, status, a kept deletion)."""
        if s.certs:
            self.ask_certificate(s)
            return
        if s.flow is None:
            return
        flow = self.engine.flow_of(s.flow, s.version)
        step = flow.by_id.get(s.state or "") if flow is not None else None
        if flow is None or step is None or not step.waits:
            return
        self.flow = flow
        self.prompt(s, step)

    def status(self, s: Session) -> str:
        """ "kết quả": one's own registration and submissions, from what the session knows."""
        bundle = self.bundle
        lines: list[str] = []
        registration = bundle.flows.get(bundle.registration or "")
        if registration is not None and (registration.id in s.done or s.profile or s.consent):
            template = (
                msg.STATUS_REGISTERED if registration.id in s.done else msg.STATUS_NOT_REGISTERED
            )
            lines.append(template.format(title=registration.title))
        pending = {c["c"] for c in s.certs}
        for campaign_id, wave in s.subs.items():
            campaign = bundle.campaigns.get(campaign_id)
            title = campaign.title if campaign is not None else campaign_id
            if campaign_id in pending:
                lines.append(msg.STATUS_CERT_PENDING.format(title=title))
                continue
            lines.append(
                msg.STATUS_SUBMITTED.format(title=title, wave=f" ({wave})" if wave else "")
            )
        current = bundle.flows.get(s.flow or "")
        if current is not None and current.evidence:
            campaign_id = current.campaign or current.id
            if campaign_id not in s.subs:
                sent = [key for key in current.evidence if key in s.data]
                campaign = bundle.campaigns.get(campaign_id)
                lines.append(
                    msg.STATUS_IN_PROGRESS.format(
                        title=campaign.title if campaign is not None else current.title,
                        sent=len(sent),
                        total=len(current.evidence),
                        items=f" ({', '.join(sent)})" if sent else "",
                    )
                )
        if not lines:
            return msg.STATUS_EMPTY
        text = "\n".join((msg.STATUS_HEADER, *lines))
        if current is not None:
            text += "\n\n" + msg.STATUS_CURRENT.format(title=current.title)
        return text

    def edit(self, s: Session) -> None:
        registration = self.bundle.registration
        if registration is None or registration not in self.bundle.flows:
            self.say(s, msg.EDIT_NOTHING)
            self.reprompt(s)
            return
        _abandon(s)
        if registration in s.done or s.profile:
            s.mode = Mode.EDIT
            self.say(s, msg.EDIT_START)
            self.start_flow(s, registration, requires=False)
        else:  # nothing to edit yet: simply register
            self.start_flow(s, registration)

    def confirm_delete(self, s: Session) -> Turn:
        inbound = self.inbound
        text = inbound.text
        yes = inbound.payload == DELETE_YES_PAYLOAD or (
            inbound.payload != DELETE_NO_PAYLOAD
            and inbound.kind in (InboundKind.TEXT, InboundKind.CHOICE)
            and (match_yes_no(text) is True or fold(text) == _DELETE_YES)
        )
        if yes:
            events: tuple[RecordEvent, ...] = (*s.events, DataDeletionRequested())
            return Turn(None, (Outbound(msg.DELETED, (MENU_BUTTON,)),), events)
        s.mode = Mode.NORMAL
        self.say(s, msg.DELETE_KEPT)
        self.reprompt(s)
        return self.result(s)

    # -- organiser actions ----------------------------------------------------------------------

    def system(self, s: Session | None) -> Turn:
        inbound = self.inbound
        name = inbound.payload or ""
        data = dict(inbound.data)
        if name == SYSTEM_APPROVE:
            return self.approved(s, data)
        if name == SYSTEM_CERTIFICATE:
            return self.certificate_ready(s, data)
        if name == SYSTEM_RESUME:
            if s is None:
                return Turn(None, (), ())
            s.paused = False
            self.say(s, msg.RESUMED, notice=NoticeKind.SYSTEM)
            if s.certs:
                self.ask_certificate(s)
            elif s.flow is not None:
                flow = self.engine.flow_of(s.flow, s.version)
                step = flow.by_id.get(s.state or "") if flow is not None else None
                if flow is not None and step is not None and step.action is ActionKind.HANDOVER:
                    self.flow = flow
                    self.fire(s, "next")
                    self.settle(s)
                else:
                    self.reprompt(s)
            return self.result(s)
        if name == SYSTEM_REJECT:
            s = s if s is not None else Session()
            s.paused = False
            criterion = data.get("criterion", "")
            reason = data.get("reason", "").strip()
            found = self.bundle.evidence_step(criterion, data.get("campaign"))
            if found is None:
                self.say(
                    s,
                    msg.REJECTED_UNKNOWN.format(reason=reason or criterion),
                    (MENU_BUTTON,),
                    NoticeKind.SYSTEM,
                )
                return self.result(s)
            flow, step = found
            item = data.get("item") or criterion
            template = msg.REJECTED if reason else msg.REJECTED_NO_REASON
            self.say(s, template.format(item=item, reason=reason), notice=NoticeKind.SYSTEM)
            _abandon(s)
            s.mode = Mode.FIX
            self.start_flow(s, flow.id, at=step.id, requires=False)
            return self.result(s)
        return Turn(s, (), (), ValueError(f"unknown system event {name!r}"))

    # -- certificates -------------------------------------------------------------------------

    def approved(self, s: Session | None, data: dict[str, str]) -> Turn:
        """SYSTEM "approve": congratulate, then ask the person to confirm the name exactly as
        it will be printed (the certificate is drawn once they have: CertificateRequested)."""
        s = s if s is not None else Session()
        campaign_id = data.get("campaign", "")
        campaign = self.bundle.campaigns.get(campaign_id)
        text = data.get("text") or (
            msg.APPROVED_CAMPAIGN.format(title=campaign.title) if campaign else msg.APPROVED
        )
        self.say(s, text, notice=NoticeKind.SYSTEM)
        if campaign_id and not any(c.get("c") == campaign_id for c in s.certs):
            name = printed_name(self.profile_name(s))
            if name and data.get("confirm") == "0":
                # Outside the platform's messaging window the question could not reach them
                # (the application says so): the registered name is printed as it is.
                s.events.append(
                    CertificateRequested(campaign_id, name, data.get("submission") or None)
                )
                return self.result(s)
            s.certs.append(
                {"c": campaign_id, "n": name or "", "i": data.get("submission", ""),
                 "s": "c" if name else "n"}
            )
            # A person talking to an organiser is asked when the bot takes over again.
            if len(s.certs) == 1 and not s.paused:
                self.ask_certificate(s)
        return self.result(s)

    def profile_name(self, s: Session) -> str:
        for name in NAME_FIELDS:
            value = s.profile.get(name)
            if isinstance(value, str) and value.strip():
                return value
        return ""

    def ask_certificate(self, s: Session, prefix: str | None = None) -> None:
        """The name question of the oldest approval still waiting for it."""
        pending = s.certs[0]
        if pending.get("s") == "n" or not pending.get("n"):
            pending["s"] = "n"
            self.say(s, f"{prefix}\n{msg.CERT_NAME_ASK}" if prefix else msg.CERT_NAME_ASK)
            return
        text = msg.CERT_NAME_CONFIRM.format(name=pending["n"])
        self.say(s, f"{prefix}\n{text}" if prefix else text, CERT_BUTTONS)

    def certificate_reply(self, s: Session) -> Turn:
        """An answer while a certificate's name waits for confirmation: "Đúng" requests the
        certificate; "Sửa tên" asks for the name, which is confirmed again. Help, status and
        deletion still work; other commands wait until the name is confirmed."""
        pending = s.certs[0]
        inbound = self.inbound
        kind = inbound.kind
        payload = inbound.payload if kind is InboundKind.CHOICE else None
        text = inbound.text if kind in (InboundKind.TEXT, InboundKind.CHOICE) else ""
        folded = fold(text) if text and len(text) <= 200 else ""
        asking_name = pending.get("s") == "n" or not pending.get("n")
        yes = payload == CERT_YES_PAYLOAD or (
            payload is None
            and not asking_name
            and (folded in _CERT_YES or match_yes_no(text) is True)
        )
        if yes and pending.get("n"):
            self.confirm_certificate(s)
            return self.result(s)
        if payload == CERT_EDIT_PAYLOAD or (
            payload is None
            and (folded in _CERT_EDIT or (not asking_name and match_yes_no(text) is False))
        ):
            pending["s"] = "n"
            self.ask_certificate(s)
            return self.result(s)
        command: Command | None = None
        if kind is InboundKind.TEXT:
            command = match_command(text)
        elif payload:
            command = _payload_command(payload)
        if command in (Command.HELP, Command.STATUS, Command.DELETE):
            self.command(s, command)  # help and status ask the name question again
            return self.result(s)
        if command is Command.EDIT:
            pending["s"] = "n"
            self.ask_certificate(s)
            return self.result(s)
        if command is not None:
            self.ask_certificate(s, msg.CERT_FIRST)
            return self.result(s)
        if asking_name and kind is InboundKind.TEXT:
            name = printed_name(text)
            if name is None:
                self.say(s, msg.CERT_NAME_BAD, notice=NoticeKind.RETRY)
                return self.result(s)
            pending["n"], pending["s"] = name, "c"
            self.ask_certificate(s)
            return self.result(s)
        self.ask_certificate(s, None if asking_name else msg.CERT_CONFIRM_RETRY)
        return self.result(s)

    def confirm_certificate(self, s: Session) -> None:
        done = s.certs.pop(0)
        s.events.append(CertificateRequested(done["c"], done["n"], done.get("i") or None))
        self.say(s, msg.CERT_CONFIRMED.format(name=done["n"]))
        self.reprompt(s)  # the next approval's name, or the question of the flow they are in

    def certificate_ready(self, s: Session | None, data: dict[str, str]) -> Turn:
        """SYSTEM "certificate": the drawn certificate (image, PDF link, badge) to hand over;
        `data` carries its URLs (bots/certificates/issue.py)."""
        campaign_id = data.get("campaign", "")
        campaign = self.bundle.campaigns.get(campaign_id)
        text = msg.CERT_READY.format(
            title=campaign.title if campaign is not None else campaign_id,
            serial=data.get("serial", ""),
            pdf=data.get("pdf_url", "") or data.get("file", ""),
            verify=data.get("verify", ""),
        )
        out = [
            Outbound(text, image=data.get("image") or None, file=data.get("file") or None,
                     notice=NoticeKind.SYSTEM)
        ]
        if data.get("badge"):
            out.append(Outbound(msg.CERT_BADGE, image=data["badge"], notice=NoticeKind.SYSTEM))
        if s is not None and any(c.get("c") == campaign_id for c in s.certs):
            s.certs = [c for c in s.certs if c.get("c") != campaign_id]  # moot now
        return Turn(s, tuple(out), ())

    # -- output -------------------------------------------------------------------------------

    def say(
        self,
        s: Session,
        text: str,
        choices: tuple[Choice, ...] = (),
        notice: NoticeKind = NoticeKind.REPLY,
    ) -> None:
        s.outbox.append(Outbound(text, choices, notice=notice))

    def prompt(self, s: Session, step: CompiledStep) -> None:
        """A step's own message: text, image and buttons."""
        editing = s.mode is Mode.EDIT and step.save is not None
        if step.prompt is not None and not editing:
            s.outbox.append(step.prompt)
            return
        text = self.render(step.text, s)
        buttons = step.buttons
        if editing:
            assert step.save is not None
            current = self.display(step.save, s)
            if current:
                text = f"{text}\n{msg.EDIT_CURRENT.format(value=current)}"
                buttons = (*buttons, KEEP_BUTTON)
        s.outbox.append(Outbound(text, buttons, step.image))

    def render(self, template: Any, s: Session) -> str:
        if template is None:
            return ""
        if template.static is not None:
            return str(template.static)
        return str(template.render(lambda name: self.display(name, s)))

    def display(self, name: str, s: Session) -> str:
        """A saved value as a person reads it: local phone form, unit name, d/m/yyyy."""
        value = s.value(name)
        if value is None:
            return self.builtin(name)
        if not isinstance(value, str):
            return ""
        kind = self.bundle.field_kinds.get(name)
        if kind is ExpectKind.PHONE and value.startswith("+84"):
            return "0" + value[3:]
        if kind is ExpectKind.UNIT:
            return self.district.unit_names.get(value) or self.bundle.unit_names.get(value) or value
        if kind is ExpectKind.DATE:
            try:
                return _date_text(date.fromisoformat(value)) or value
            except ValueError:
                return value
        return value

    def builtin(self, name: str) -> str:
        """Fields every text may use without saving them (flows.placeholders.BUILTIN_FIELDS).
        Unknown names render empty: `loa check` reports them before a flow can run."""
        if name == "to_chuc":
            return self.district.name
        if name == "kenh":
            return self.inbound.channel.value
        flow = self.flow
        campaign = self.bundle.campaigns.get(flow.campaign or "") if flow is not None else None
        if campaign is None:
            return ""
        if name == "ten_chien_dich":
            return campaign.title
        wave = self.open_wave(campaign)
        if wave is None:
            return ""
        if name == "dot":
            return wave.name
        if name == "tu_ngay":
            return _date_text(wave.from_) or ""
        if name == "den_ngay":
            return _date_text(wave.to) or ""
        return ""


# -- helpers ----------------------------------------------------------------------------------


def _abandon(s: Session, *, keep_stack: bool = False) -> None:
    """Leave the current run: its unrecorded answers go with it."""
    s.flow = s.version = s.state = None
    s.data = {}
    s.retries = 0
    s.mode = Mode.NORMAL
    if not keep_stack:
        s.stack = []


def printed_name(text: str) -> str | None:
    """A name as a certificate prints it: NFC, single spaces, in capitals ("Nguyễn Văn An" →
    "NGUYỄN VĂN AN"); None unless it is 4–60 characters of letters, spaces and ' - . only."""
    name = " ".join(unicodedata.normalize("NFC", text).split())
    if not NAME_MIN <= len(name) <= NAME_MAX:
        return None
    if not all(
        ch.isalpha() or ch in " '-." or unicodedata.category(ch).startswith("M") for ch in name
    ):
        return None
    if sum(ch.isalpha() for ch in name) < 2:
        return None
    return unicodedata.normalize("NFC", name.upper())


def _payload_command(payload: str) -> Command | None:
    if not payload.startswith(CMD_PREFIX):
        return None
    try:
        return Command(payload[len(CMD_PREFIX) :])
    except ValueError:
        return None


def _kind_reason(kind: InboundKind) -> Invalid:
    if kind is InboundKind.STICKER:
        return Invalid(Reason.STICKER)
    if kind in (InboundKind.IMAGE, InboundKind.FILE):
        return Invalid(Reason.MEDIA_NOT_TEXT)
    if kind is InboundKind.LOCATION:
        return Invalid(Reason.LOCATION)
    return Invalid(Reason.UNSUPPORTED)


def _date_text(value: date | None) -> str | None:
    return value.strftime("%d/%m/%Y") if value is not None else None


def _unit_payload(slug: str) -> str:
    """A unit suggestion button's payload: its slug, or a hash when the slug is not short
    ASCII (units from a CSV may have any code)."""
    if len(slug) <= 60 and slug.isascii() and slug.isprintable():
        return UNIT_PAYLOAD + slug
    return UNIT_PAYLOAD + "#" + hashlib.sha256(slug.encode()).hexdigest()[:16]


def _unit_of_payload(key: str, units: tuple[tuple[str, str], ...]) -> tuple[str, str] | None:
    for slug, name in units:
        if _unit_payload(slug) == UNIT_PAYLOAD + key:
            return slug, name
    return None


def _attachment_ref(a: Attachment) -> str:
    return a.sha256 or a.unique_id or a.file_id or a.url or a.name or ""


_ATTACHMENT_FIELDS = (
    "mime", "url", "file_id", "unique_id", "size", "sha256", "name", "qr", "phash",
)  # fmt: skip


def _hold_evidence(text: str | None, attachment: Attachment | None) -> dict[str, Any]:
    """An evidence answer kept in the session until consent is given (JSON-able)."""
    if attachment is None:
        return {"t": text or ""}
    return {"a": {k: getattr(attachment, k) for k in _ATTACHMENT_FIELDS if getattr(attachment, k)}}


def _unhold_evidence(held: dict[str, Any]) -> tuple[str | None, Attachment | None]:
    if "a" in held:
        return None, Attachment(**held["a"])
    return str(held.get("t", "")), None


__all__ = ["MAX_HOPS", "Engine", "FlowLoopError", "Turn", "archive_of", "printed_name"]
