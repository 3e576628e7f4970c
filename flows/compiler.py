"""Compile a validated `Bundle` once into what the engine runs: flat `transitions` machines.

Per flow: stable step ids, a content-hash version, every step's successor resolved, texts split
into placeholder templates, choice matchers folded, and one `transitions.Machine` built
model-less (`model=None`, `auto_transitions=False`, `send_event=True`). Callbacks are callables
bound to the compiled step; they call back into the engine's per-turn `Runtime` (passed as the
`rt` trigger argument), so the compiled flow holds no engine state and can be shared by every
conversation and cached by (flow id, version). Nothing here is mutated after it is built.

The organisation tree compiles into districts (nodes with channels, and every top-level node)
with their units, entry links and menu flow.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson
from transitions import EventData, Machine

from flows import messages
from flows.placeholders import placeholders
from flows.schema import (
    ActionKind,
    ActionStep,
    AskStep,
    BranchStep,
    Bundle,
    Campaign,
    ChoiceItem,
    ChooseStep,
    Condition,
    EndStep,
    EvidenceStep,
    Expect,
    ExpectKind,
    Flow,
    LinkTarget,
    OrgNode,
    SayStep,
)
from flows.session import Session
from flows.steps import MENU, step_ids
from flows.text import ChoiceMatcher, choice_matcher, fold, match_yes_no
from flows.vocab import Choice, Outbound

if TYPE_CHECKING:
    from flows.validators import Valid

# Machine states that are not steps. Step ids match `[a-z_][a-z0-9_]*`, so these never collide.
START = "<start>"  # where a run stands before entering a step (`enter:<id>` leaves it)
END = "<end>"  # the flow has finished
FLOW_PREFIX = ">"  # ">flow_id": the run leaves for another flow

# A yes/no question saving one of these fields is the personal-data consent question.
CONSENT_FIELDS = frozenset({"dong_y", "consent"})

PAYLOAD_MAX = 64  # bytes: the strictest platform's button payload limit
_PAYLOAD_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,24}$")


class StepKind(enum.Enum):
    SAY = "say"
    ASK = "ask"
    EVIDENCE = "evidence"
    CHOOSE = "choose"
    BRANCH = "branch"
    ACTION = "action"
    END = "end"


class TargetKind(enum.Enum):
    STEP = "step"
    FLOW = "flow"
    END = "end"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a step leads: a step of the same flow, another flow, or the end of the flow."""

    kind: TargetKind
    name: str = ""

    @property
    def state(self) -> str:
        if self.kind is TargetKind.STEP:
            return self.name
        if self.kind is TargetKind.FLOW:
            return FLOW_PREFIX + self.name
        return END


END_TARGET = Target(TargetKind.END)


@dataclass(frozen=True, slots=True)
class Template:
    """A text split once at its `{field}` placeholders: literals at even, fields at odd
    positions of `parts`. `static` is the text itself when it has no placeholder."""

    parts: tuple[str, ...]
    static: str | None

    @property
    def fields(self) -> tuple[str, ...]:
        return self.parts[1::2]

    def render(self, value: Callable[[str], str]) -> str:
        if self.static is not None:
            return self.static
        parts = self.parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            out.append(value(parts[i]))
            out.append(parts[i + 1])
        return "".join(out)


def compile_template(text: str) -> Template:
    """Split at `{field}` placeholders (as `flows.placeholders` finds them, the checker's
    rule); `{{` and `}}` in the literal parts write single braces."""
    found = placeholders(text)
    if not found:
        literal = _unescape(text)
        return Template((literal,), literal)
    parts: list[str] = []
    position = 0
    for ph in found:
        parts.append(_unescape(text[position : ph.offset]))
        parts.append(ph.name)
        position = ph.offset + len(ph.raw)
    parts.append(_unescape(text[position:]))
    return Template(tuple(parts), None)


def _unescape(literal: str) -> str:
    return literal.replace("{{", "{").replace("}}", "}")


@dataclass(frozen=True, slots=True)
class CompiledChoice:
    title: str
    payload: str  # "c:<flow key>:<step key>:<n>", ASCII, ≤ 64 bytes
    target: Target | None  # choose/say buttons: where the pick leads; None for answer buttons


@dataclass(frozen=True, slots=True)
class Edge:
    """A successor edge for the checker and diagrams."""

    source: str
    target: Target
    label: str = ""


Test = Callable[["Session"], bool]


@dataclass(frozen=True, slots=True, eq=False)
class CompiledStep:
    id: str
    index: int
    kind: StepKind
    model: Any  # the schema step it came from (for positions and the checker)
    text: Template | None  # say / ask / choose prompt, end text, action `say`
    image: str | None
    next: Target
    payload_key: str
    waits: bool  # stops and waits for the person's answer
    ends: bool = False  # continuing leads straight to the end (last step, or a bare `end`)
    expect: Expect | None = None
    save: str | None = None
    evidence: str | None = None
    retry: Template | None = None
    max_retries: int = 3
    choices: tuple[CompiledChoice, ...] = ()
    buttons: tuple[Choice, ...] = ()  # the choices as the Outbound carries them
    matcher: ChoiceMatcher | None = None  # choose / say-with-choices
    prompt: Outbound | None = None  # the whole prompt when it has no placeholder
    consent: bool = False
    no_target: Target | None = None  # yes/no: where "no" leads
    no_text: Template | None = None
    no_abandons: bool = False  # "no" leaves the flow unfinished (consent refused)
    cases: tuple[tuple[Test, Target, Condition], ...] = ()
    else_target: Target | None = None
    action: ActionKind | None = None
    tag: str | None = None
    notify: Template | None = None
    report: str | None = None  # action: report — the kind of entry recorded
    # action: report — fields forgotten once the entry is recorded: those asked inside the loop
    # that comes back to this step (every entry field when there is no loop)
    clears: tuple[str, ...] = ()

    def texts(self) -> tuple[str, ...]:
        """Every organiser text of the step (for the checker's placeholder check)."""
        out: list[str] = []
        for tpl in (self.text, self.retry, self.no_text, self.notify):
            if tpl is not None:
                out.append("".join(tpl.parts))
        return tuple(out)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledFlow:
    id: str
    version: str  # content hash of the flow's canonical JSON
    title: str
    campaign: str | None
    requires: str | None
    steps: tuple[CompiledStep, ...]
    by_id: Mapping[str, CompiledStep]
    first: str
    machine: Machine
    payload_key: str
    saves: frozenset[str]  # every field an ask step saves (consent included)
    profile_fields: tuple[str, ...]  # saved fields that are profile data (consent excluded)
    evidence: tuple[str, ...]  # evidence keys in order
    consent_step: str | None
    field_kinds: Mapping[str, ExpectKind]
    submit_after: Mapping[str, str]  # evidence step → the next submit action after it
    flow_targets: frozenset[str]  # flows this flow can lead to
    # A flow with `action: report` records its answers as entries, never into the profile:
    # these are the fields an entry carries (in step order), and those that are citizen IDs.
    entry_fields: tuple[str, ...] = ()
    protected: frozenset[str] = frozenset()

    def step(self, step_id: str) -> CompiledStep | None:
        return self.by_id.get(step_id)

    def edges(self) -> tuple[Edge, ...]:
        """Every successor edge, in step order (what the checker and diagrams walk)."""
        out: list[Edge] = []
        for step in self.steps:
            kind = step.kind
            if kind is StepKind.BRANCH:
                for _, target, _cond in step.cases:
                    out.append(Edge(step.id, target, "nếu"))
                out.append(Edge(step.id, step.else_target or step.next, "còn lại"))
            elif step.matcher is not None:  # choose, say with choices
                for choice in step.choices:
                    out.append(Edge(step.id, choice.target or step.next, choice.title))
            elif kind is StepKind.END:
                out.append(Edge(step.id, END_TARGET))
            else:
                out.append(Edge(step.id, step.next))
                if step.no_target is not None and step.no_target != step.next:
                    out.append(Edge(step.id, step.no_target, messages.NO_TITLE))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Link:
    flow: str
    code: str | None = None  # a cadre referral code recorded with the entry


@dataclass(frozen=True, slots=True)
class District:
    slug: str
    name: str
    units: tuple[tuple[str, str], ...]  # (slug, name) of the units someone can belong to
    links: Mapping[str, Link]  # deep-link ref → flow (+ referral code)
    menu: str | None  # the flow for first contact and "menu"
    unit_names: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, eq=False)
class CompiledBundle:
    flows: Mapping[str, CompiledFlow]
    districts: Mapping[str, District]
    campaigns: Mapping[str, Campaign]
    menu: str | None  # the bundle-wide default menu flow
    required: frozenset[str]  # flows some flow `requires` (their answers persist in sessions)
    registration: str | None  # the flow "sửa thông tin" re-runs
    payloads: Mapping[str, tuple[str, str, int]]  # button payload → (flow, step, n)
    unit_names: Mapping[str, str]  # every unit slug → name
    field_kinds: Mapping[str, ExpectKind]  # saved field → the kind of its answer
    base_dir: Path
    default_district: District
    # The organisation tree as written (units from CSV files are children there): what the
    # records' organisation tables are synchronised from (bots.reports.organisations).
    organisations: Mapping[str, OrgNode] = field(default_factory=lambda: MappingProxyType({}))

    def district(self, slug: str) -> District:
        return self.districts.get(slug) or self.default_district

    def evidence_step(
        self, criterion: str, campaign: str | None = None
    ) -> tuple[CompiledFlow, CompiledStep] | None:
        """The flow and step that collect an evidence item (preferring the campaign's flow)."""
        found: tuple[CompiledFlow, CompiledStep] | None = None
        for flow in self.flows.values():
            step = flow.by_id.get(criterion)
            if step is None or step.evidence != criterion:
                step = next((s for s in flow.steps if s.evidence == criterion), None)
            if step is None:
                continue
            if campaign is None or flow.campaign == campaign:
                return flow, step
            found = found or (flow, step)
        return found


class Runtime(Protocol):
    """What the machine callbacks call: the engine's per-turn context (`rt` trigger argument)."""

    def enter(self, step: CompiledStep, session: Session) -> None: ...
    def answered(self, step: CompiledStep, session: Session, result: Valid | None) -> None: ...
    def refused(self, step: CompiledStep, session: Session, result: Valid) -> None: ...
    def retried(self, step: CompiledStep, session: Session, message: Outbound) -> None: ...


# -- machine callbacks: bound with functools.partial, never looked up by name -----------------


def _on_enter(step: CompiledStep, ev: EventData) -> None:
    ev.kwargs["rt"].enter(step, ev.model)


def _on_answer(step: CompiledStep, ev: EventData) -> None:
    ev.kwargs["rt"].answered(step, ev.model, ev.kwargs.get("result"))


def _on_no(step: CompiledStep, ev: EventData) -> None:
    ev.kwargs["rt"].refused(step, ev.model, ev.kwargs["result"])


def _on_retry(step: CompiledStep, ev: EventData) -> None:
    ev.kwargs["rt"].retried(step, ev.model, ev.kwargs["message"])


def _condition(test: Test, ev: EventData) -> bool:
    return test(cast(Session, ev.model))


# -- conditions -----------------------------------------------------------------------------------


def _equals(value: Any, expected: Any) -> bool:
    if value is None:
        return False
    if isinstance(expected, bool):
        return match_yes_no(str(value)) is expected
    if isinstance(expected, int | float):
        try:
            return float(str(value).replace(",", ".")) == float(expected)
        except ValueError:
            return False
    return fold(str(value)) == fold(str(expected))


def compile_condition(cond: Condition) -> Test:
    """A predicate on a session's saved values (this run's answers, then the profile)."""
    if cond.field is not None:
        name = cond.field
        if cond.equals is not None:
            expected = cond.equals
            return lambda s: _equals(s.value(name), expected)
        if cond.in_ is not None:
            options = cond.in_
            return lambda s: any(_equals(s.value(name), o) for o in options)
        want = bool(cond.exists)
        return lambda s: (s.value(name) not in (None, "")) is want
    if cond.not_ is not None:
        inner = compile_condition(cond.not_)
        return lambda s: not inner(s)
    if cond.all is not None:
        tests = tuple(compile_condition(c) for c in cond.all)
        return lambda s: all(t(s) for t in tests)
    tests = tuple(compile_condition(c) for c in cond.any or ())
    return lambda s: any(t(s) for t in tests)


# -- ids, versions, payloads ----------------------------------------------------------------------


def _canonical(model: Any) -> bytes:
    # Key-sorted compact JSON of what the organiser wrote (defaults left out, so a new optional
    # field in the language does not change existing versions).
    return orjson.dumps(
        model.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        option=orjson.OPT_SORT_KEYS,
    )


def flow_version(flow: Flow) -> str:
    """Content hash of one flow: editing flow A never changes flow B's version."""
    return hashlib.sha256(_canonical(flow)).hexdigest()[:12]


def _payload_key(name: str) -> str:
    if _PAYLOAD_SAFE.match(name):
        return name
    return "#" + hashlib.sha256(name.encode()).hexdigest()[:10]


def choice_payload(flow_key: str, step_key: str, n: int) -> str:
    return f"c:{flow_key}:{step_key}:{n}"


def parse_payload(payload: str) -> tuple[str, str, int] | None:
    """(flow key, step key, n) of a choice payload, else None."""
    if not payload.startswith("c:"):
        return None
    parts = payload.split(":")
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    return parts[1], parts[2], int(parts[3])


# -- flows ----------------------------------------------------------------------------------------

_FLOW_CACHE: OrderedDict[tuple[str, str], CompiledFlow] = OrderedDict()
_FLOW_CACHE_MAX = 2048


def compile_flow(flow_id: str, flow: Flow) -> CompiledFlow:
    """One flow, compiled once per (id, version) and then served from a cache."""
    version = flow_version(flow)
    key = (flow_id, version)
    cached = _FLOW_CACHE.get(key)
    if cached is not None:
        _FLOW_CACHE.move_to_end(key)
        return cached
    compiled = _build_flow(flow_id, flow, version)
    _FLOW_CACHE[key] = compiled
    if len(_FLOW_CACHE) > _FLOW_CACHE_MAX:
        _FLOW_CACHE.popitem(last=False)
    return compiled


def _build_flow(flow_id: str, flow: Flow, version: str) -> CompiledFlow:
    ids = tuple(step_ids(flow))  # flows.steps: the same ids the checker and diagrams show
    id_set = frozenset(ids)
    flow_key = _payload_key(flow_id)

    def resolve(goto: str | None, index: int) -> Target:
        if goto is None:
            return Target(TargetKind.STEP, ids[index + 1]) if index + 1 < len(ids) else END_TARGET
        if goto in id_set:
            return Target(TargetKind.STEP, goto)
        # Not a step: another flow. Unknown names are the checker's to report.
        return Target(TargetKind.FLOW, goto)

    steps: list[CompiledStep] = []
    field_kinds: dict[str, ExpectKind] = {}
    for index, (sid, model) in enumerate(zip(ids, flow.steps, strict=True)):
        step = _compile_step(sid, index, model, flow_key, resolve)
        steps.append(step)
        if step.save and step.expect is not None:
            field_kinds.setdefault(step.save, step.expect.kind)
        if step.evidence and step.expect is not None:
            field_kinds.setdefault(step.evidence, step.expect.kind)

    # A step whose successor is the end, or an `end` step with no text, ends the flow when it
    # continues: the engine then finishes without firing one more transition.
    bare_ends = {
        sid for sid, m in zip(ids, flow.steps, strict=True) if isinstance(m, EndStep) and not m.end
    }
    steps = [
        replace(
            s,
            ends=s.next.kind is TargetKind.END
            or (s.next.kind is TargetKind.STEP and s.next.name in bare_ends),
        )
        for s in steps
    ]
    profile: list[str] = []
    for s in steps:
        if s.kind is StepKind.ASK and s.save and not s.consent and s.save not in profile:
            profile.append(s.save)
    entry_fields: tuple[str, ...] = ()
    protected: frozenset[str] = frozenset()
    if any(s.action is ActionKind.REPORT for s in steps):
        # Answers are the reported entry's, not the reporter's own profile.
        entry_fields, profile = tuple(profile), []
        protected = frozenset(f for f in entry_fields if field_kinds.get(f) is ExpectKind.CCCD)
        steps = _with_clears(steps, entry_fields)
    by_id = {s.id: s for s in steps}
    consent_step = next((s.id for s in steps if s.consent), None)
    submit_after: dict[str, str] = {}
    for i, s in enumerate(steps):
        if s.kind is StepKind.EVIDENCE:
            nxt = next((t.id for t in steps[i + 1 :] if t.action is ActionKind.SUBMIT), None)
            if nxt is not None:
                submit_after[s.id] = nxt
    targets = frozenset(
        t.name
        for s in steps
        for t in (
            s.next,
            s.no_target,
            s.else_target,
            *(c.target for c in s.choices),
            *(c[1] for c in s.cases),
        )
        if t is not None and t.kind is TargetKind.FLOW
    )
    compiled = CompiledFlow(
        id=flow_id,
        version=version,
        title=flow.title or flow_id,
        campaign=flow.campaign,
        requires=flow.requires,
        steps=tuple(steps),
        by_id=MappingProxyType(by_id),
        first=ids[0],
        machine=_build_machine(flow_id, steps, targets),
        payload_key=flow_key,
        saves=frozenset(s.save for s in steps if s.save),
        profile_fields=tuple(profile),
        evidence=tuple(s.evidence for s in steps if s.evidence),
        consent_step=consent_step,
        field_kinds=MappingProxyType(field_kinds),
        submit_after=MappingProxyType(submit_after),
        flow_targets=targets,
        entry_fields=entry_fields,
        protected=protected,
    )
    return compiled


def _step_targets(step: CompiledStep) -> Iterable[str]:
    """The steps of the same flow that `step` can continue to."""
    for t in (
        step.next,
        step.no_target,
        step.else_target,
        *(c.target for c in step.choices),
        *(c[1] for c in step.cases),
    ):
        if t is not None and t.kind is TargetKind.STEP:
            yield t.name


def _with_clears(steps: list[CompiledStep], entry_fields: tuple[str, ...]) -> list[CompiledStep]:
    """Each report step with the fields it forgets once its entry is recorded: those saved by
    steps on a loop through it ("report another?"), so the next round starts fresh while what
    was asked once before the loop goes into every entry. Without a loop: every entry field."""
    succ = {s.id: set(_step_targets(s)) for s in steps}
    pred: dict[str, set[str]] = {s.id: set() for s in steps}
    for source, targets in succ.items():
        for target in targets:
            pred.setdefault(target, set()).add(source)

    def closure(start: str, graph: Mapping[str, set[str]]) -> set[str]:
        seen: set[str] = set()
        stack = list(graph.get(start, ()))
        while stack:
            sid = stack.pop()
            if sid not in seen:
                seen.add(sid)
                stack.extend(graph.get(sid, ()))
        return seen

    out: list[CompiledStep] = []
    for s in steps:
        if s.action is ActionKind.REPORT:
            loop = closure(s.id, succ) & closure(s.id, pred)
            looped = [t.save for t in steps if t.id in loop and t.save in entry_fields]
            s = replace(s, clears=tuple(f for f in entry_fields if f in looped) or entry_fields)
        out.append(s)
    return out


def _choices(
    flow_key: str,
    step_key: str,
    titles: Sequence[str],
    targets: Sequence[Target | None],
) -> tuple[tuple[CompiledChoice, ...], tuple[Choice, ...]]:
    choices = tuple(
        CompiledChoice(title, choice_payload(flow_key, step_key, n), target)
        for n, (title, target) in enumerate(zip(titles, targets, strict=True), 1)
    )
    return choices, tuple(Choice(c.title, c.payload) for c in choices)


def _compile_step(
    sid: str,
    index: int,
    model: Any,
    flow_key: str,
    resolve: Callable[[str | None, int], Target],
) -> CompiledStep:
    step_key = _payload_key(sid)
    image = model.image
    nxt = resolve(model.goto, index)
    common: dict[str, Any] = {
        "id": sid,
        "index": index,
        "model": model,
        "image": image,
        "payload_key": step_key,
    }

    if isinstance(model, SayStep | ChooseStep):
        items: tuple[ChoiceItem, ...] = model.choices
        text = compile_template(model.say if isinstance(model, SayStep) else model.choose)
        targets = [resolve(c.goto, index) if c.goto else nxt for c in items]
        choices, buttons = _choices(flow_key, step_key, [c.title for c in items], targets)
        matcher = choice_matcher([(c.title, *c.synonyms) for c in items]) if items else None
        is_say = isinstance(model, SayStep)
        retry = None if isinstance(model, SayStep) else _opt_template(model.retry)
        max_retries = 3 if isinstance(model, SayStep) else model.max_retries
        return CompiledStep(
            **common,
            kind=StepKind.SAY if is_say else StepKind.CHOOSE,
            text=text,
            next=nxt,
            waits=bool(items),
            choices=choices,
            buttons=buttons,
            matcher=matcher,
            prompt=_static_prompt(text, buttons, image),
            retry=retry,
            max_retries=max_retries,
        )

    if isinstance(model, AskStep):  # EvidenceStep is an AskStep too
        expect = model.expect
        is_evidence = isinstance(model, EvidenceStep)
        consent = (
            not is_evidence and expect.kind is ExpectKind.YES_NO and model.save in CONSENT_FIELDS
        )
        text = compile_template(model.ask)
        titles: Sequence[str] = ()
        if expect.kind is ExpectKind.CHOICE:
            titles = expect.options
        elif expect.kind is ExpectKind.YES_NO:
            if len(expect.options) >= 2:
                titles = expect.options[:2]
            elif consent:
                titles = (messages.CONSENT_YES_TITLE, messages.CONSENT_NO_TITLE)
            else:
                titles = (messages.YES_TITLE, messages.NO_TITLE)
        choices, buttons = _choices(flow_key, step_key, titles, [None] * len(titles))
        no_target: Target | None = None
        no_text: Template | None = None
        no_abandons = False
        if expect.kind is ExpectKind.YES_NO:
            when_no = model.when_no
            if when_no is not None and when_no.goto:
                no_target = resolve(when_no.goto, index)
            elif when_no is not None or consent:
                no_target = END_TARGET  # `when_no` without goto (or no consent) ends the flow
            else:
                no_target = nxt  # "no" is just an answer
            no_text = _opt_template(when_no.say if when_no else None)
            no_abandons = consent  # refusing consent leaves the flow unfinished
        return CompiledStep(
            **common,
            kind=StepKind.EVIDENCE if is_evidence else StepKind.ASK,
            text=text,
            next=nxt,
            waits=True,
            expect=expect,
            save=model.save,
            evidence=model.evidence if isinstance(model, EvidenceStep) else None,
            retry=_opt_template(model.retry),
            max_retries=model.max_retries,
            choices=choices,
            buttons=buttons,
            prompt=_static_prompt(text, buttons, image),
            consent=consent,
            no_target=no_target,
            no_text=no_text,
            no_abandons=no_abandons,
        )

    if isinstance(model, BranchStep):
        cases = tuple(
            (compile_condition(case.if_), resolve(case.goto, index), case.if_)
            for case in model.branch
        )
        return CompiledStep(
            **common,
            kind=StepKind.BRANCH,
            text=None,
            next=nxt,
            waits=False,
            cases=cases,
            else_target=resolve(model.else_, index) if model.else_ else nxt,
        )

    if isinstance(model, ActionStep):
        if model.action is ActionKind.GOTO and model.flow:
            nxt = Target(TargetKind.FLOW, model.flow)
        return CompiledStep(
            **common,
            kind=StepKind.ACTION,
            text=_opt_template(model.say),
            next=nxt,
            waits=False,
            action=model.action,
            tag=model.tag,
            notify=_opt_template(model.text),
            report=model.report,
        )

    assert isinstance(model, EndStep)
    return CompiledStep(
        **common,
        kind=StepKind.END,
        text=_opt_template(model.end),
        next=END_TARGET,
        waits=False,
    )


def _opt_template(text: str | None) -> Template | None:
    return compile_template(text) if text else None


def _static_prompt(
    text: Template, buttons: tuple[Choice, ...], image: str | None
) -> Outbound | None:
    if text.static is None:
        return None
    return Outbound(text.static, buttons, image)


def _build_machine(flow_id: str, steps: Sequence[CompiledStep], targets: Iterable[str]) -> Machine:
    states: list[Any] = [START, END]
    states.extend(FLOW_PREFIX + t for t in sorted(targets))
    transitions: list[dict[str, Any]] = []
    for step in steps:
        states.append({"name": step.id, "on_enter": [partial(_on_enter, step)]})
        transitions.append({"trigger": f"enter:{step.id}", "source": START, "dest": step.id})
        sid, kind = step.id, step.kind
        if step.waits:
            transitions.append(
                {
                    "trigger": "retry",
                    "source": sid,
                    "dest": None,
                    "after": [partial(_on_retry, step)],
                }
            )
        if kind is StepKind.ASK or kind is StepKind.EVIDENCE:
            transitions.append(
                {
                    "trigger": "answer",
                    "source": sid,
                    "dest": step.next.state,
                    "before": [partial(_on_answer, step)],
                }
            )
            if step.no_target is not None:
                transitions.append(
                    {
                        "trigger": "no",
                        "source": sid,
                        "dest": step.no_target.state,
                        "before": [partial(_on_no, step)],
                    }
                )
        elif kind is StepKind.BRANCH:
            for test, target, _cond in step.cases:
                transitions.append(
                    {
                        "trigger": "next",
                        "source": sid,
                        "dest": target.state,
                        "conditions": [partial(_condition, test)],
                    }
                )
            assert step.else_target is not None
            transitions.append({"trigger": "next", "source": sid, "dest": step.else_target.state})
        else:  # say, choose, action, end
            for n, choice in enumerate(step.choices, 1):
                dest = (choice.target or step.next).state
                transitions.append({"trigger": f"pick_{n}", "source": sid, "dest": dest})
            # `next`: how say/action/end continue, and how "sửa thông tin" skips a say's buttons.
            if kind is not StepKind.CHOOSE:
                transitions.append({"trigger": "next", "source": sid, "dest": step.next.state})
    return Machine(
        model=None,
        states=states,
        transitions=transitions,
        initial=START,
        auto_transitions=False,
        send_event=True,
        ignore_invalid_triggers=False,
        name=f"{flow_id}: ",
    )


# -- organisations --------------------------------------------------------------------------------


def _walk(
    nodes: Mapping[str, OrgNode], ancestors: tuple[tuple[str, OrgNode], ...] = ()
) -> Iterable[tuple[str, OrgNode, tuple[tuple[str, OrgNode], ...]]]:
    for slug, node in nodes.items():
        yield slug, node, ancestors
        yield from _walk(node.children, (*ancestors, (slug, node)))


def _descendant_units(
    slug: str, node: OrgNode, extra: Mapping[str, Sequence[tuple[str, str]]]
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = list(extra.get(slug, ()))
    for child_slug, child, _ in _walk(node.children):
        out.append((child_slug, child.name))
        out.extend(extra.get(child_slug, ()))
    seen: set[str] = set()
    unique = []
    for unit in out:
        if unit[0] not in seen:
            seen.add(unit[0])
            unique.append(unit)
    return unique


def _link(target: str | LinkTarget) -> Link:
    if isinstance(target, str):
        return Link(target)
    return Link(target.flow, target.ref)


def compile_bundle(
    bundle: Bundle,
    base_dir: Path,
    units: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> CompiledBundle:
    """Compile a deployment. `units` maps an organisation node's slug to the (slug, name) units
    of its `units:` CSV file (the loader reads files; the compiler does no I/O); they are added
    to that node's districts. Without it, a district's units are its descendants."""
    extra = units or {}
    flows = {fid: compile_flow(fid, flow) for fid, flow in bundle.flows.items()}
    first_flow = next(iter(flows), None)
    # The district's menu (nearest node up the tree), else the bundle's, else a flow named
    # `menu`, else the first flow (the same order `goto: menu` follows, see flows.steps).
    default_menu = bundle.menu or (MENU if MENU in flows else first_flow)

    districts: dict[str, District] = {}
    unit_names: dict[str, str] = {}
    for slug, node, ancestors in _walk(bundle.organisations):
        unit_names.setdefault(slug, node.name)
        for unit_slug, unit_name in extra.get(slug, ()):
            unit_names.setdefault(unit_slug, unit_name)
        if node.channels or not ancestors:
            chain = (*ancestors, (slug, node))
            links: dict[str, Link] = {}
            menu: str | None = None
            for _, ancestor in chain:  # nearer nodes override
                links.update({ref: _link(t) for ref, t in ancestor.links.items()})
                menu = ancestor.menu or menu
            district_units = tuple(_descendant_units(slug, node, extra))
            districts[slug] = District(
                slug=slug,
                name=node.name,
                units=district_units,
                links=MappingProxyType(links),
                menu=menu or default_menu,
                unit_names=MappingProxyType(dict(district_units)),
            )

    all_units = tuple(unit_names.items())
    default = next(iter(districts.values()), None) or District(
        slug="",
        name="",
        units=all_units,
        links=MappingProxyType({}),
        menu=default_menu,
        unit_names=MappingProxyType(dict(all_units)),
    )

    required = frozenset(f.requires for f in bundle.flows.values() if f.requires)
    registration = next((fid for fid in flows if fid in required), None)
    if registration is None:
        registration = next((fid for fid, f in flows.items() if f.consent_step), None)

    payloads: dict[str, tuple[str, str, int]] = {}
    field_kinds: dict[str, ExpectKind] = {}
    for flow in flows.values():
        for step in flow.steps:
            for n, choice in enumerate(step.choices, 1):
                payloads.setdefault(choice.payload, (flow.id, step.id, n))
        for name, kind in flow.field_kinds.items():
            field_kinds.setdefault(name, kind)

    return CompiledBundle(
        flows=MappingProxyType(flows),
        districts=MappingProxyType(districts),
        campaigns=MappingProxyType(dict(bundle.campaigns)),
        menu=default_menu,
        required=required,
        registration=registration,
        payloads=MappingProxyType(payloads),
        unit_names=MappingProxyType(unit_names),
        field_kinds=MappingProxyType(field_kinds),
        base_dir=base_dir,
        default_district=default,
        organisations=MappingProxyType(dict(bundle.organisations)),
    )


__all__ = [
    "CONSENT_FIELDS",
    "END",
    "FLOW_PREFIX",
    "START",
    "CompiledBundle",
    "CompiledChoice",
    "CompiledFlow",
    "CompiledStep",
    "District",
    "Edge",
    "Link",
    "Runtime",
    "StepKind",
    "Target",
    "TargetKind",
    "Template",
    "choice_payload",
    "compile_bundle",
    "compile_condition",
    "compile_flow",
    "compile_template",
    "flow_version",
    "parse_payload",
]
