"""Step ids and the edges between steps: the single source for the checker, the compiler and
the diagrams, so that all three agree on what a flow is.

Step ids. Every step has a stable id: its explicit `id`, else its `save` key, else its
`evidence` key, else its kind plus a short hash of its content (`say_3f2a1c`). Two steps with
identical content get `_2`, `_3`, ... in list order. Editing one step therefore never changes
another step's id, and a person half-way through a flow stays on the question they were on.

Edges. Steps run in list order unless a step says otherwise:
- say: continues to its `goto`, else the next step. With `choices` it waits for a press, and
  each choice goes to its own `goto`, else where the step would have continued.
- ask / evidence: continues to `goto`, else the next step. A yes/no "no" with `when_no.goto`
  goes there; `when_no` without `goto` ends the flow (after its `say`).
- choose: each choice to its `goto`, else to the step's `goto`, else the next step.
- branch: each case to its `goto`; otherwise to `else`, else the step's `goto`, else the next step.
- action: `action: goto` starts `flow` (nothing else); other actions continue like a say.
- end: nothing. After the last step (no `goto`), the flow ends.

A target names a step of the same flow if one has that id, otherwise a flow. The name `menu`,
when no step or flow has it, means the district's menu flow (see `MENU`).

Pure functions of a validated `Flow`; nothing here does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass

from flows.schema import (
    ActionKind,
    ActionStep,
    AskStep,
    BranchStep,
    ChooseStep,
    Condition,
    EndStep,
    EvidenceStep,
    Flow,
    SayStep,
    Step,
    step_kind,
)

# `goto: menu` (when no step or flow has that id) returns to the district's menu flow: its
# `menu`, else the nearest ancestor's, else the bundle's `menu`, else a flow named `menu`,
# else the first flow of the bundle.
MENU = "menu"

PathPart = str | int


class EdgeKind(enum.Enum):
    NEXT = "next"  # list order, or the step's own `goto`
    CHOICE = "choice"  # a button of a say/choose step
    CASE = "case"  # a branch case whose condition holds
    ELSE = "else"  # a branch where no case holds
    NO = "no"  # a yes/no question answered "no" (`when_no.goto`)
    FLOW = "flow"  # `action: goto` starting another flow


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # step id
    target: str  # a step id of the same flow, a flow id, or MENU
    kind: EdgeKind
    label: str  # short text for diagrams: a choice title, "không", "còn lại", ...
    via: tuple[PathPart, ...]  # where the target is written, relative to the step; () if implied


def _canonical(step: Step) -> bytes:
    # Compact, key-sorted JSON of what the organiser wrote (defaults left out, so adding a
    # new optional field to the language does not change existing ids).
    content = step.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def step_id(step: Step) -> str:
    """The id one step asks for on its own: `id`, else `save`, else `evidence`, else kind and
    content hash. `step_ids` makes them unique within a flow."""
    if step.id:
        return step.id
    if isinstance(step, AskStep) and step.save:
        return step.save
    if isinstance(step, EvidenceStep):
        return step.evidence
    return f"{step_kind(step) or 'step'}_{hashlib.sha256(_canonical(step)).hexdigest()[:6]}"


def step_ids(flow: Flow) -> list[str]:
    """The unique ids of the flow's steps, in list order: a repeated id gets `_2`, `_3`, ...
    (repeated explicit ids are an error that `loa check` reports; this stays total anyway)."""
    used: set[str] = set()
    ids: list[str] = []
    for step in flow.steps:
        base = step_id(step)
        sid, n = base, 2
        while sid in used:
            sid, n = f"{base}_{n}", n + 1
        used.add(sid)
        ids.append(sid)
    return ids


def waits(step: Step) -> bool:
    """Whether the step stops and waits for the person (or a human) before going on."""
    if isinstance(step, AskStep | ChooseStep):
        return True
    if isinstance(step, SayStep):
        return bool(step.choices)
    if isinstance(step, ActionStep):
        return step.action is ActionKind.HANDOVER
    return False


def edges(flow: Flow) -> list[Edge]:
    """Every edge of the flow, in step order and, within a step, in the order written."""
    ids = step_ids(flow)
    out: list[Edge] = []
    for index, step in enumerate(flow.steps):
        sid = ids[index]
        following = ids[index + 1] if index + 1 < len(ids) else None
        onward: tuple[str | None, tuple[PathPart, ...]] = (
            (step.goto, ("goto",)) if step.goto else (following, ())
        )

        def add(
            target: str | None,
            kind: EdgeKind,
            label: str,
            via: tuple[PathPart, ...],
            source: str = sid,
        ) -> None:
            if target is not None:
                out.append(Edge(source, target, kind, label, via))

        if isinstance(step, EndStep):
            continue
        if isinstance(step, ActionStep) and step.action is ActionKind.GOTO:
            add(step.flow, EdgeKind.FLOW, "chuyển kịch bản", ("flow",))
        elif isinstance(step, SayStep | ChooseStep) and step.choices:
            for n, choice in enumerate(step.choices):
                if choice.goto:
                    add(choice.goto, EdgeKind.CHOICE, choice.title, ("choices", n, "goto"))
                else:
                    add(onward[0], EdgeKind.CHOICE, choice.title, onward[1])
        elif isinstance(step, BranchStep):
            for n, case in enumerate(step.branch):
                add(case.goto, EdgeKind.CASE, f"nếu {_condition_label(case.if_)}",
                    ("branch", n, "goto"))
            if step.else_:
                add(step.else_, EdgeKind.ELSE, "còn lại", ("else",))
            else:
                add(onward[0], EdgeKind.ELSE, "còn lại", onward[1])
        else:
            add(onward[0], EdgeKind.NEXT, "tiếp", onward[1])
            if isinstance(step, AskStep) and step.when_no and step.when_no.goto:
                add(step.when_no.goto, EdgeKind.NO, "không", ("when_no", "goto"))
    return out


def successors(flow: Flow) -> dict[str, list[str]]:
    """Step id -> the targets it can go to (step ids, flow ids or MENU), without repeats.
    Every step has an entry; an empty list means the flow ends there."""
    result: dict[str, list[str]] = {sid: [] for sid in step_ids(flow)}
    for edge in edges(flow):
        targets = result[edge.source]
        if edge.target not in targets:
            targets.append(edge.target)
    return result


def _condition_label(cond: Condition) -> str:
    if cond.field is not None:
        if cond.equals is not None:
            return f"{cond.field} = {cond.equals}"
        if cond.in_ is not None:
            return f"{cond.field} thuộc {', '.join(str(v) for v in cond.in_)}"
        return f"có {cond.field}" if cond.exists else f"chưa có {cond.field}"
    if cond.not_ is not None:
        return f"không ({_condition_label(cond.not_)})"
    parts = cond.all if cond.all is not None else cond.any or ()
    joiner = " và " if cond.all is not None else " hoặc "
    return joiner.join(_condition_label(p) for p in parts)


__all__ = [
    "MENU",
    "Edge",
    "EdgeKind",
    "edges",
    "step_id",
    "step_ids",
    "successors",
    "waits",
]
