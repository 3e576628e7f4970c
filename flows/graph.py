"""`loa graph FLOW`: a Mermaid `stateDiagram-v2` of one flow.

The diagram comes from a diagram-only `transitions` GraphMachine built from the same step ids
and edges as the checker and the compiler (`flows.steps`), so what it shows is what runs. The
machine is never used to run a conversation.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from transitions import State
from transitions.extensions.diagrams import GraphMachine

from flows.check import default_config, format_problem, load_checked, step_text
from flows.schema import ActionStep, Flow, step_kind
from flows.steps import MENU, EdgeKind, edges, step_ids
from flows.suggest import did_you_mean

FLOW_PREFIX = "flow__"  # diagram states standing for another flow


class _LabelledState(State):
    """A state that carries a display label (rendered by the Mermaid backend)."""

    def __init__(self, *args: Any, label: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.label = label


class _Diagram(GraphMachine):
    state_cls = _LabelledState


class _Model:
    """GraphMachine draws the graph of a model; this one is only ever drawn."""


def _clean(text: str, limit: int = 40) -> str:
    """Text safe inside a Mermaid label: one line, no quotes or characters Mermaid parses."""
    text = " ".join(text.split()).replace('"', "'")
    text = re.sub(r"[{}]", "", text)
    text = re.sub(r"[<>#;:]", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _state_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _label(sid: str, step: Any) -> str:
    kind = step_kind(step) or "?"
    if isinstance(step, ActionStep):
        kind = f"action {step.action.value}"
    text = _clean(step_text(step))
    return f"{sid} · {kind} · {text}" if text else f"{sid} · {kind}"


def mermaid(flow_id: str, flow: Flow) -> str:
    """The Mermaid source of a flow's diagram, starting with `stateDiagram-v2`."""
    ids = step_ids(flow)
    states: list[dict[str, Any]] = [
        {"name": _state_name(sid), "label": _label(sid, step)}
        for sid, step in zip(ids, flow.steps, strict=True)
    ]
    known = set(ids)
    outside: dict[str, str] = {}
    transitions: list[dict[str, Any]] = []
    has_exit: set[str] = set()
    for edge in edges(flow):
        if edge.target in known and edge.kind is not EdgeKind.FLOW:
            dest = _state_name(edge.target)
        else:
            dest = FLOW_PREFIX + _state_name(edge.target)
            title = "menu" if edge.target == MENU else f"kịch bản {edge.target}"
            outside.setdefault(dest, f"→ {title}")
        has_exit.add(edge.source)
        transitions.append({
            "trigger": f"{edge.kind.value}:{len(transitions)}",
            "source": _state_name(edge.source),
            "dest": dest,
            "label": _clean(edge.label, 30) or edge.kind.value,
        })
    states.extend({"name": name, "label": label} for name, label in outside.items())
    machine = _Diagram(
        model=_Model(),
        states=states,
        transitions=transitions,
        initial=_state_name(ids[0]),
        auto_transitions=False,
        graph_engine="mermaid",
        title=_clean(flow.title or flow_id),
    )
    source: str = machine.get_graph().draw(None)
    lines = source.split("\n")
    # Drop Mermaid's front matter (--- title ---) so the output starts with the diagram type;
    # the title goes into a comment instead.
    if lines and lines[0] == "---":
        end = lines.index("---", 1)
        title = " ".join(lines[1:end])
        lines = lines[end + 1:]
        lines.insert(1, f"  %% {flow_id}: {title}")
    ends = [f"  {_state_name(sid)} --> [*]" for sid in ids if sid not in has_exit]
    return "\n".join([*lines, *ends]) + "\n"


def main(args: argparse.Namespace) -> int:
    config = getattr(args, "config", None) or default_config()
    loaded = load_checked(config)
    if loaded.bundle is None:
        for problem in loaded.errors:
            print(format_problem(problem), file=sys.stderr)
        print(f"{loaded.main_file}: có lỗi, chưa vẽ được sơ đồ; chạy 'loa check {config}' "
              "để xem chi tiết", file=sys.stderr)
        return 1
    flows = loaded.bundle.flows
    flow = flows.get(args.flow)
    if flow is None:
        suggestion = did_you_mean(args.flow, flows)
        print(f"không có kịch bản nào tên '{args.flow}' trong {loaded.main_file}"
              + (f"; {suggestion}" if suggestion else ""), file=sys.stderr)
        print(f"các kịch bản: {', '.join(flows)}", file=sys.stderr)
        return 1
    sys.stdout.write(mermaid(args.flow, flow))
    return 0


__all__ = ["main", "mermaid"]
