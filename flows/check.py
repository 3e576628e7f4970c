"""`loa check`: everything a mistake in flows.yaml could break, reported as
`file:line:column: message` with a hint, before the bot ever runs it.

The loader checks syntax and the schema; this module checks what refers to what: step and
flow targets, reachability, placeholders, media files, duplicate ids, campaigns and waves,
links and menus, consent before personal data. It reads only the configuration and the media
files it names, writes nothing, and imports only yaml, pydantic and the standard library.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from flows.loader import Loaded, load, with_problems
from flows.placeholders import BUILTIN_FIELDS, placeholders
from flows.problems import NodePath, Problem, Severity
from flows.schema import (
    REF,
    SLUG,
    ActionKind,
    ActionStep,
    AskStep,
    BranchStep,
    Bundle,
    ChoiceItem,
    ChooseStep,
    Condition,
    EndStep,
    EvidenceStep,
    ExpectKind,
    Flow,
    LinkTarget,
    OrgNode,
    SayStep,
    Step,
    step_kind,
)
from flows.steps import MENU, Edge, EdgeKind, edges, step_id, step_ids, waits
from flows.suggest import did_you_mean, fold, slugify

# A yes/no question saving this field is the consent question: personal data comes after it.
CONSENT_FIELD = "dong_y"
# Answers of these kinds are personal data (evidence is too: screenshots show ID numbers).
PERSONAL_KINDS = {ExpectKind.PHONE, ExpectKind.EMAIL, ExpectKind.CCCD, ExpectKind.IMAGE,
                  ExpectKind.FILE}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
CHANNEL_NAMES = ("messenger", "zalo", "zalobot", "telegram", "webchat", "console")
_SECRET_KEY = re.compile(r"token|secret|password|passwd|api_?key|app_?key", re.IGNORECASE)
_URL = re.compile(r"^https?://", re.IGNORECASE)


def _vn_date(day: date) -> str:
    return day.strftime("%d/%m/%Y")


def _short(text: str | None, limit: int = 30) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _list(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … (+{len(names) - limit})" if len(names) > limit else "")


def step_text(step: Step) -> str:
    """The main text of a step (for labels and messages)."""
    if isinstance(step, SayStep):
        return step.say
    if isinstance(step, AskStep):
        return step.ask
    if isinstance(step, ChooseStep):
        return step.choose
    if isinstance(step, ActionStep):
        return step.say or step.flow or step.tag or step.report or ""
    if isinstance(step, EndStep):
        return step.end or ""
    return ""


def _texts(step: Step) -> Iterator[tuple[NodePath, str]]:
    """(path inside the step, text) of every text shown to the person or to organisers."""
    if isinstance(step, SayStep):
        yield ("say",), step.say
    if isinstance(step, AskStep):
        yield ("ask",), step.ask
        if step.retry:
            yield ("retry",), step.retry
        if step.when_no and step.when_no.say:
            yield ("when_no", "say"), step.when_no.say
    if isinstance(step, ChooseStep):
        yield ("choose",), step.choose
        if step.retry:
            yield ("retry",), step.retry
    if isinstance(step, SayStep | ChooseStep):
        for n, choice in enumerate(step.choices):
            yield ("choices", n, "title"), choice.title
    if isinstance(step, ActionStep):
        if step.say:
            yield ("say",), step.say
        if step.text:
            yield ("text",), step.text
    if isinstance(step, EndStep) and step.end:
        yield ("end",), step.end


def _conditions(cond: Condition, path: NodePath) -> Iterator[tuple[NodePath, str]]:
    """(path, field) of every field a condition tests."""
    if cond.field is not None:
        yield (*path, "field"), cond.field
    if cond.not_ is not None:
        yield from _conditions(cond.not_, (*path, "not"))
    for key, parts in (("all", cond.all), ("any", cond.any)):
        for n, part in enumerate(parts or ()):
            yield from _conditions(part, (*path, key, n))


def _saves(step: Step) -> list[tuple[str, str]]:
    """(key in the step, field) of what a step saves."""
    out = []
    if isinstance(step, AskStep) and step.save:
        out.append(("save", step.save))
    if isinstance(step, EvidenceStep):
        out.append(("evidence", step.evidence))
    return out


def _is_consent(step: Step) -> bool:
    return isinstance(step, AskStep) and step.expect.kind is ExpectKind.YES_NO \
        and step.save == CONSENT_FIELD


def _is_personal(step: Step) -> bool:
    return isinstance(step, EvidenceStep) or (
        isinstance(step, AskStep) and step.save is not None
        and step.expect.kind in PERSONAL_KINDS
    )


@dataclass(frozen=True, slots=True)
class _FlowInfo:
    fid: str
    flow: Flow
    ids: list[str]
    edges: list[Edge]

    def path(self, index: int, *rest: str | int) -> NodePath:
        return ("flows", self.fid, "steps", index, *rest)

    def index_of(self, sid: str) -> int:
        return self.ids.index(sid)

    def label(self, index: int) -> str:
        """How a step is named in messages: its id, or its kind and text if the id is derived."""
        step = self.flow.steps[index]
        sid = self.ids[index]
        if step.id or _saves(step):
            return f"'{sid}'"
        return f"'{step_kind(step)}: {_short(step_text(step))}'"


class _Checker:
    def __init__(self, loaded: Loaded, bundle: Bundle) -> None:
        self.loaded = loaded
        self.bundle = bundle
        self.positions = loaded.positions
        self.problems: list[Problem] = []
        self.flows = {
            fid: _FlowInfo(fid, flow, step_ids(flow), edges(flow))
            for fid, flow in bundle.flows.items()
        }
        self.saved: set[str] = {field for info in self.flows.values()
                                for step in info.flow.steps for _, field in _saves(step)}
        self.known_fields = self.saved | set(BUILTIN_FIELDS)

    # -- reporting
    def _add(self, path: NodePath, message: str, hint: str, severity: Severity,
             key: bool) -> None:
        pos = self.positions.key(path) if key else self.positions.at(path)
        self.problems.append(Problem(pos.file, pos.line, pos.column, message, hint, severity))

    def error(self, path: NodePath, message: str, hint: str = "", key: bool = False) -> None:
        self._add(path, message, hint, Severity.ERROR, key)

    def warn(self, path: NodePath, message: str, hint: str = "", key: bool = False) -> None:
        self._add(path, message, hint, Severity.WARNING, key)

    def line_of(self, path: NodePath) -> int:
        return self.positions.at(path).line

    # -- the checks
    def run(self) -> list[Problem]:
        self.check_names()
        for info in self.flows.values():
            self.check_ids(info)
            self.check_targets(info)
            self.check_reachable_steps(info)
            self.check_loops(info)
            self.check_steps(info)
            self.check_consent_order(info)
        self.check_requires()
        self.check_campaigns()
        self.check_organisations()
        self.check_reachable_flows()
        self.check_consent_exists()
        return self.problems

    def check_names(self) -> None:
        for section, what in (("flows", "kịch bản"), ("campaigns", "chiến dịch")):
            names = self.bundle.flows if section == "flows" else self.bundle.campaigns
            for name in names:
                if not re.match(SLUG, name):
                    self.error((section, name),
                               f"tên {what} '{name}' chỉ gồm chữ thường không dấu, số, - và _",
                               f"VD: {slugify(name)}", key=True)

    def check_ids(self, info: _FlowInfo) -> None:
        seen: dict[str, int] = {}
        saved: dict[str, int] = {}
        for index, step in enumerate(info.flow.steps):
            sid = step_id(step)
            if not (step.id or _saves(step)):
                continue  # derived ids are made unique by step_ids
            reported = False
            if sid in seen:
                source = "id" if step.id else ("save" if _saves(step) and _saves(step)[0][0]
                                               == "save" else "evidence")
                first = self.line_of(info.path(seen[sid]))
                self.error(info.path(index, source),
                           f"mã bước '{sid}' trùng với bước ở dòng {first}",
                           "mỗi bước trong một kịch bản cần mã riêng (id, save hoặc evidence)")
                reported = True
            else:
                seen[sid] = index
            for key, field in _saves(step):
                if field in saved and not reported and key == "save":
                    first = self.line_of(info.path(saved[field]))
                    self.error(info.path(index, key),
                               f"trường '{field}' đã được lưu ở bước dòng {first}",
                               "mỗi trường chỉ lưu ở một bước của kịch bản; đổi tên một trong "
                               "hai")
                saved.setdefault(field, index)

    def _target_names(self, info: _FlowInfo) -> list[str]:
        return [*info.ids, *self.flows]

    def check_targets(self, info: _FlowInfo) -> None:
        step_set = set(info.ids)
        for edge in info.edges:
            if not edge.via:
                continue
            index = info.index_of(edge.source)
            path = info.path(index, *edge.via)
            target = edge.target
            if edge.kind is EdgeKind.FLOW:
                if target not in self.flows:
                    self.error(path, f"không có kịch bản nào tên '{target}'",
                               did_you_mean(target, self.flows)
                               or f"các kịch bản: {_list(self.flows)}")
                continue
            if target in step_set:
                if target in self.flows and target != info.fid:
                    self.warn(path, f"'{target}' vừa là một bước vừa là một kịch bản: goto tới "
                              "bước trong kịch bản này",
                              "đổi mã bước (id) để khỏi nhầm")
                continue
            if target in self.flows or target == MENU:
                continue
            suggestion = did_you_mean(target, self._target_names(info))
            self.error(path, f"không có bước hay kịch bản nào tên '{target}'",
                       suggestion or f"các bước trong kịch bản này: {_list(info.ids)}")

    def _reachable(self, info: _FlowInfo, avoid: str | None = None) -> set[str]:
        step_set = set(info.ids)
        succ: dict[str, list[str]] = {sid: [] for sid in info.ids}
        for edge in info.edges:
            if edge.target in step_set and edge.kind is not EdgeKind.FLOW:
                succ[edge.source].append(edge.target)
        start = info.ids[0]
        if start == avoid:
            return set()
        seen = {start}
        stack = [start]
        while stack:
            for nxt in succ[stack.pop()]:
                if nxt not in seen and nxt != avoid:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def check_reachable_steps(self, info: _FlowInfo) -> None:
        reached = self._reachable(info)
        for index, sid in enumerate(info.ids):
            if sid not in reached and info.ids.index(sid) == index:
                self.error(info.path(index),
                           f"bước {info.label(index)} không bao giờ được chạy tới",
                           "bước phía trên kết thúc bằng goto, end hoặc lựa chọn: thêm goto "
                           "tới bước này, hoặc xóa nó")

    def check_loops(self, info: _FlowInfo) -> None:
        """A cycle of steps that never wait for an answer would run forever."""
        moving = {sid for sid, step in zip(info.ids, info.flow.steps, strict=True)
                  if not waits(step)}
        succ: dict[str, list[str]] = {sid: [] for sid in moving}
        for edge in info.edges:
            if edge.source in moving and edge.target in moving \
                    and edge.kind is not EdgeKind.FLOW:
                succ[edge.source].append(edge.target)
        state: dict[str, int] = {}  # 1 on the stack, 2 done
        reported: set[frozenset[str]] = set()

        def visit(sid: str, trail: list[str]) -> None:
            state[sid] = 1
            trail.append(sid)
            for nxt in succ[sid]:
                if state.get(nxt) == 1:
                    cycle = trail[trail.index(nxt):]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        first = min(info.index_of(s) for s in cycle)
                        loop = " → ".join(
                            info.label(info.index_of(s)) for s in [*cycle, nxt])
                        self.error(info.path(first), f"vòng lặp không bao giờ dừng: {loop}",
                                   "vòng lặp cần ít nhất một câu hỏi hoặc lựa chọn để người "
                                   "dùng trả lời")
                elif nxt not in state:
                    visit(nxt, trail)
            trail.pop()
            state[sid] = 2

        for sid in info.ids:
            if sid in moving and sid not in state:
                visit(sid, [])

    def check_steps(self, info: _FlowInfo) -> None:
        flow = info.flow
        for index, step in enumerate(flow.steps):
            # texts and placeholders
            for rel, text in _texts(step):
                self.check_placeholders(info.path(index, *rel), text)
            # branch conditions name saved fields
            if isinstance(step, BranchStep):
                for n, case in enumerate(step.branch):
                    for rel, field in _conditions(case.if_, ("branch", n, "if")):
                        if field not in self.known_fields:
                            self.error(info.path(index, *rel),
                                       f"không có bước nào lưu trường '{field}'",
                                       did_you_mean(field, self.known_fields)
                                       or "điều kiện chỉ xét được các trường đã lưu (save)")
            # media
            if step.image:
                self.check_image(info.path(index, "image"), step.image)
            # evidence and submit need a campaign
            if isinstance(step, EvidenceStep) and flow.campaign is None:
                self.error(info.path(index, "evidence"),
                           "bước evidence cần kịch bản có 'campaign'",
                           "thêm 'campaign: <tên chiến dịch>' vào kịch bản "
                           f"'{info.fid}'", key=True)
            if isinstance(step, ActionStep) and step.action is ActionKind.SUBMIT \
                    and flow.campaign is None:
                self.error(info.path(index, "action"),
                           "action: submit cần kịch bản có 'campaign'",
                           f"thêm 'campaign: <tên chiến dịch>' vào kịch bản '{info.fid}'")
            if isinstance(step, ActionStep):
                self.check_report(info, index, step)
            # when_no only on yes/no
            if isinstance(step, AskStep) and step.when_no is not None \
                    and step.expect.kind is not ExpectKind.YES_NO:
                self.error(info.path(index, "when_no"),
                           "when_no chỉ dùng cho câu hỏi có/không",
                           "thêm 'expect: yes_no', hoặc bỏ when_no", key=True)
            if isinstance(step, AskStep) and step.expect.kind is ExpectKind.UNIT \
                    and not self._has_units():
                self.warn(info.path(index, "expect"),
                          "expect: unit nhưng chưa khai báo đơn vị nào",
                          "thêm children hoặc units: <tệp CSV> cho đơn vị sở hữu kênh")
            if isinstance(step, AskStep) and step.expect.kind is ExpectKind.CHOICE:
                self.check_distinct(info.path(index, "expect"),
                                    [(("choice", n), o, n) for n, o in
                                     enumerate(step.expect.options)], "lựa chọn")
            if isinstance(step, SayStep | ChooseStep) and step.choices:
                self.check_choices(info, index, step.choices)
            # a goto that does nothing
            if step.goto and (isinstance(step, EndStep) or (
                    isinstance(step, ActionStep) and step.action is ActionKind.GOTO)):
                self.warn(info.path(index, "goto"), "goto ở bước này không có tác dụng",
                          "bước end kết thúc kịch bản; action: goto chuyển sang 'flow'")

    def check_report(self, info: _FlowInfo, index: int, step: ActionStep) -> None:
        """`action: report` records the flow's answers as an entry (not the person's profile)."""
        if step.action is not ActionKind.REPORT:
            if step.report is not None:
                self.warn(info.path(index, "report"),
                          f"khóa 'report' chỉ dùng với action: report (bước này là action: "
                          f"{step.action.value})", "bỏ khóa report, hoặc đổi thành action: report",
                          key=True)
            return
        if not any(isinstance(s, AskStep) and not isinstance(s, EvidenceStep) and s.save
                   and not _is_consent(s) for s in info.flow.steps):
            self.warn(info.path(index, "action"),
                      "action: report không có câu trả lời nào để ghi nhận",
                      "thêm các câu hỏi ask có save trước bước này")
        if any(other.flow.requires == info.fid for other in self.flows.values()):
            self.error(info.path(index, "action"),
                       f"kịch bản '{info.fid}' được requires nên không dùng được action: report",
                       "câu trả lời của kịch bản có action: report được ghi thành mục báo cáo, "
                       "không lưu vào thông tin người dùng; tách phần báo cáo ra kịch bản khác")

    def check_choices(self, info: _FlowInfo, index: int, choices: tuple[ChoiceItem, ...]) -> None:
        words: list[tuple[NodePath, str, int]] = []
        for n, choice in enumerate(choices):
            words.append((("choices", n, "title"), choice.title, n))
            for m, synonym in enumerate(choice.synonyms):
                words.append((("choices", n, "synonyms", m), synonym, n))
        self.check_distinct(info.path(index), words, "lựa chọn")

    def check_distinct(self, base: NodePath, words: list[tuple[NodePath, str, int]],
                       what: str) -> None:
        """Answers matched without diacritics must not be confused with each other: a word
        (title or synonym) of one option may not be a word of another option."""
        seen: dict[str, tuple[NodePath, int]] = {}
        for rel, word, option in words:
            key = fold(word)
            if key in seen and seen[key][1] != option:
                first = self.line_of((*base, *seen[key][0]))
                self.error((*base, *rel),
                           f"{what} '{word}' trùng với một {what} khác ở dòng {first} "
                           "(so không dấu)",
                           "mỗi lựa chọn cần một tên khác hẳn để người dùng gõ")
            else:
                seen.setdefault(key, (rel, option))

    def check_placeholders(self, path: NodePath, text: str) -> None:
        for ph in placeholders(text):
            if not ph.valid:
                pos = self.positions.find(path, ph.raw)
                self.problems.append(Problem(
                    pos.file, pos.line, pos.column,
                    f"'{ph.raw}' không phải tên trường hợp lệ",
                    f"tên trường viết thường không dấu, nối bằng _, VD: {{{slugify(ph.name)}}}; "
                    "muốn viết dấu ngoặc nhọn thì gõ {{ và }}"))
            elif ph.name not in self.known_fields:
                pos = self.positions.find(path, ph.raw)
                suggestion = did_you_mean(ph.name, self.known_fields)
                self.problems.append(Problem(
                    pos.file, pos.line, pos.column,
                    f"không có bước nào lưu trường '{ph.name}' để điền vào {ph.raw}",
                    suggestion or "các trường có sẵn: "
                    + _list(sorted(self.saved) + sorted(BUILTIN_FIELDS))))

    def check_image(self, path: NodePath, image: str) -> None:
        if _URL.match(image):
            return
        base = self.loaded.base_dir
        # Lexical containment: a symlinked media folder inside the deployment is fine.
        target = Path(os.path.normpath(base / image))
        if not target.is_relative_to(base):
            self.error(path, f"ảnh '{image}' nằm ngoài thư mục của {self.loaded.main_file}",
                       "đặt ảnh trong thư mục kịch bản, VD: media/mau.png")
        elif not target.is_file():
            folder = os.path.dirname(self.positions.file_of(path)) or "."
            self.error(path, f"không tìm thấy ảnh '{image}'",
                       f"đường dẫn tính từ thư mục chứa tệp kịch bản ({folder}); kiểm tra tên "
                       "tệp và chữ hoa/thường")
        elif target.suffix.lower() not in IMAGE_SUFFIXES:
            self.warn(path, f"'{image}' không phải ảnh .png, .jpg, .gif hoặc .webp",
                      "các kênh chỉ hiện được ảnh ở những định dạng này")

    def check_consent_order(self, info: _FlowInfo) -> None:
        consent = [sid for sid, step in zip(info.ids, info.flow.steps, strict=True)
                   if _is_consent(step)]
        if not consent:
            return
        before = self._reachable(info, avoid=consent[0])
        for index, (sid, step) in enumerate(zip(info.ids, info.flow.steps, strict=True)):
            if sid in before and _saves(step) and not _is_consent(step):
                key, field = _saves(step)[0]
                self.warn(info.path(index, key),
                          f"bước lưu '{field}' trước khi người dùng đồng ý ({CONSENT_FIELD})",
                          "đưa câu hỏi đồng ý lên trước các câu hỏi lưu thông tin cá nhân")

    def check_requires(self) -> None:
        for fid, info in self.flows.items():
            required = info.flow.requires
            if required is None:
                continue
            path = ("flows", fid, "requires")
            if required == fid:
                self.error(path, "kịch bản không thể requires chính nó", "bỏ dòng requires")
            elif required not in self.flows:
                self.error(path, f"không có kịch bản nào tên '{required}'",
                           did_you_mean(required, self.flows)
                           or f"các kịch bản: {_list(self.flows)}")
        # cycles: A requires B requires A
        for fid in self.flows:
            chain = [fid]
            current = self.flows[fid].flow.requires
            while current in self.flows and current not in chain:
                chain.append(current)
                current = self.flows[current].flow.requires
            if current == fid and len(chain) > 1:
                self.error(("flows", fid, "requires"),
                           f"requires tạo vòng: {' → '.join([*chain, fid])}",
                           "bỏ requires ở một trong các kịch bản này")

        for fid, info in self.flows.items():
            if info.flow.campaign is not None and info.flow.campaign not in self.bundle.campaigns:
                self.error(("flows", fid, "campaign"),
                           f"không có chiến dịch nào tên '{info.flow.campaign}'",
                           did_you_mean(info.flow.campaign, self.bundle.campaigns)
                           or "khai báo chiến dịch trong campaigns:"
                           + (f" (đang có: {_list(self.bundle.campaigns)})"
                              if self.bundle.campaigns else ""))

    def check_campaigns(self) -> None:
        for cid, campaign in self.bundle.campaigns.items():
            base = ("campaigns", cid)
            names: dict[str, int] = {}
            for n, wave in enumerate(campaign.waves):
                if fold(wave.name) in names:
                    self.error((*base, "waves", n, "name"),
                               f"tên đợt '{wave.name}' bị lặp lại", "đặt tên khác cho mỗi đợt")
                names.setdefault(fold(wave.name), n)
                if n == 0:
                    continue
                prev = campaign.waves[n - 1]
                if wave.from_ < prev.from_:
                    self.error((*base, "waves", n, "from"),
                               f"đợt '{wave.name}' bắt đầu trước đợt '{prev.name}' ở trên",
                               "xếp các đợt theo thứ tự thời gian")
                elif wave.from_ <= prev.to:
                    self.error((*base, "waves", n, "from"),
                               f"đợt '{wave.name}' bắt đầu ({_vn_date(wave.from_)}) trước khi "
                               f"đợt '{prev.name}' kết thúc ({_vn_date(prev.to)})",
                               "các đợt không được chồng lên nhau; ngày from và to đều được "
                               "tính vào đợt")
            if campaign.closed:
                self.check_placeholders((*base, "closed"), campaign.closed)

    def _org_nodes(self) -> Iterator[tuple[NodePath, OrgNode, OrgNode | None]]:
        """(path, node, the nearest node owning channels at or above it)."""
        def walk(nodes: dict[str, OrgNode], path: NodePath,
                 owner: OrgNode | None) -> Iterator[tuple[NodePath, OrgNode, OrgNode | None]]:
            for slug, node in nodes.items():
                here = (*path, slug)
                mine = node if node.channels else owner
                yield here, node, mine
                yield from walk(node.children, (*here, "children"), mine)
        yield from walk(self.bundle.organisations, ("organisations",), None)

    def _has_units(self) -> bool:
        return any(node.children for _, node, _ in self._org_nodes())

    def check_organisations(self) -> None:
        if self.bundle.menu is not None and self.bundle.menu not in self.flows:
            self.error(("menu",), f"không có kịch bản nào tên '{self.bundle.menu}'",
                       did_you_mean(self.bundle.menu, self.flows)
                       or f"các kịch bản: {_list(self.flows)}")
        refs_by_owner: dict[int, dict[str, NodePath]] = {}
        slugs: dict[str, NodePath] = {}
        for path, node, owner in self._org_nodes():
            # A unit's code names it everywhere (deep links, participants' unit, reports,
            # organiser accounts): two units with one code in two branches would be confused.
            slug = str(path[-1])
            first_use = slugs.setdefault(slug, path)
            if first_use is not path:
                parent = str(path[-3]) if len(path) > 3 else "moi"
                self.error(path, f"mã đơn vị '{slug}' đã dùng ở dòng {self.line_of(first_use)}",
                           "mỗi đơn vị cần một mã riêng trong cả tệp, VD: thêm tên quận/huyện "
                           f"vào mã ({slug}-{parent})", key=True)
            if node.menu is not None and node.menu not in self.flows:
                self.error((*path, "menu"), f"không có kịch bản nào tên '{node.menu}'",
                           did_you_mean(node.menu, self.flows)
                           or f"các kịch bản: {_list(self.flows)}")
            for channel, config in node.channels.items():
                cpath = (*path, "channels", channel)
                if channel not in CHANNEL_NAMES:
                    self.error(cpath, f"kênh '{channel}' không được hỗ trợ",
                               did_you_mean(channel, CHANNEL_NAMES)
                               or f"các kênh: {', '.join(CHANNEL_NAMES)}", key=True)
                for key, value in config.items():
                    if _SECRET_KEY.search(key) and not (
                            isinstance(value, str) and value.startswith("$")):
                        self.error((*cpath, key),
                                   f"không ghi '{key}' trực tiếp trong tệp kịch bản",
                                   f"viết {key}: $TEN_BIEN rồi đặt biến môi trường TEN_BIEN "
                                   "khi chạy loa serve")
            refs = refs_by_owner.setdefault(id(owner), {})
            for ref, target in node.links.items():
                lpath = (*path, "links", ref)
                flow = target if isinstance(target, str) else target.flow
                fpath = lpath if isinstance(target, str) else (*lpath, "flow")
                if flow not in self.flows:
                    self.error(fpath, f"không có kịch bản nào tên '{flow}'",
                               did_you_mean(flow, self.flows)
                               or f"các kịch bản: {_list(self.flows)}")
                if isinstance(target, LinkTarget) and target.ref is not None \
                        and not re.match(REF, target.ref):
                    self.error((*lpath, "ref"),
                               f"mã giới thiệu '{target.ref}' chỉ gồm A-Z, a-z, 0-9, _ và -, "
                               "tối đa 64 ký tự",
                               f"VD: {slugify(target.ref)}")
                if owner is not None and ref in refs:
                    first = self.line_of(refs[ref])
                    self.error(lpath, f"mã liên kết '{ref}' đã dùng ở dòng {first} trên cùng "
                               "kênh", "mỗi liên kết của một trang/bot cần mã riêng", key=True)
                refs.setdefault(ref, lpath)

    def _entry_flows(self) -> set[str]:
        entries: set[str] = set()
        if self.bundle.menu is not None:
            entries.add(self.bundle.menu)
        elif MENU in self.flows:
            entries.add(MENU)
        elif self.flows:
            entries.add(next(iter(self.flows)))
        for _, node, _ in self._org_nodes():
            if node.menu:
                entries.add(node.menu)
            for target in node.links.values():
                entries.add(target if isinstance(target, str) else target.flow)
        return entries

    def check_reachable_flows(self) -> None:
        reached: set[str] = set()
        stack = [f for f in self._entry_flows() if f in self.flows]
        reached.update(stack)
        while stack:
            info = self.flows[stack.pop()]
            nexts = [e.target for e in info.edges if e.target not in info.ids]
            if info.flow.requires:
                nexts.append(info.flow.requires)
            if any(e.target == MENU and MENU not in info.ids for e in info.edges):
                nexts.extend(self._entry_flows())
            for fid in nexts:
                if fid in self.flows and fid not in reached:
                    reached.add(fid)
                    stack.append(fid)
        for fid in self.flows:
            if fid not in reached:
                self.warn(("flows", fid),
                          f"kịch bản '{fid}' không được mở từ menu, liên kết hay goto nào",
                          "thêm một lựa chọn hoặc goto tới kịch bản này, hoặc một liên kết "
                          "(links) cho nó", key=True)

    def check_consent_exists(self) -> None:
        def has_consent(fid: str, seen: set[str]) -> bool:
            info = self.flows.get(fid)
            if info is None or fid in seen:
                return False
            seen.add(fid)
            if any(_is_consent(step) for step in info.flow.steps):
                return True
            return info.flow.requires is not None and has_consent(info.flow.requires, seen)

        for fid, info in self.flows.items():
            personal = [n for n, step in enumerate(info.flow.steps) if _is_personal(step)]
            if personal and not has_consent(fid, set()):
                step = info.flow.steps[personal[0]]
                key = _saves(step)[0][0]
                self.warn(info.path(personal[0], key),
                          "kịch bản thu thông tin cá nhân mà chưa hỏi người dùng đồng ý",
                          f"thêm câu hỏi đồng ý (expect: yes_no, save: {CONSENT_FIELD}) ở đầu, "
                          "hoặc requires: <kịch bản đăng ký có câu hỏi đồng ý>")


def check_loaded(loaded: Loaded) -> list[Problem]:
    """The cross-reference problems of a loaded configuration (none if it did not parse)."""
    bundle = loaded.parsed
    if bundle is None:
        return []
    checker = _Checker(loaded, bundle)
    try:
        return checker.run()
    except Exception as error:  # a bug here must not hide the problems found so far
        pos = loaded.positions.at(())
        return [*checker.problems, Problem(
            pos.file, pos.line, pos.column,
            f"lỗi nội bộ khi kiểm tra ({type(error).__name__}: {error})",
            "hãy báo lỗi này cho người phát triển Loa, kèm tệp kịch bản")]


def load_checked(path: Path | str) -> Loaded:
    """`load` plus every check: `bundle` is set only if there is no error at all. This is what
    the server and the chat console load."""
    loaded = load(path)
    return with_problems(loaded, check_loaded(loaded))


def check(path: Path | str) -> list[Problem]:
    """Every problem of a configuration, errors and warnings, in file and line order."""
    return list(load_checked(path).problems)


def summary(loaded: Loaded) -> str:
    errors = len(loaded.errors)
    warnings = len(loaded.problems) - errors
    warned = f", {warnings} cảnh báo" if warnings else ""
    if errors:
        return f"{loaded.main_file}: {errors} lỗi{warned}"
    bundle = loaded.parsed
    flows = len(bundle.flows) if bundle else 0
    steps = sum(len(f.steps) for f in bundle.flows.values()) if bundle else 0
    return f"{loaded.main_file}: không có lỗi{warned} ({flows} kịch bản, {steps} bước)"


def format_problem(problem: Problem) -> str:
    text = str(problem)
    return f"{text}\n  gợi ý: {problem.hint}" if problem.hint else text


def default_config() -> str:
    return os.environ.get("LOA_CONFIG") or "flows.yaml"


def main(args: argparse.Namespace) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    files = list(getattr(args, "files", None) or []) or [default_config()]
    failed = False
    for name in files:
        loaded = load_checked(name)
        for problem in loaded.problems:
            print(format_problem(problem))
        print(summary(loaded))
        failed = failed or bool(loaded.errors)
    return 1 if failed else 0


__all__ = [
    "CONSENT_FIELD",
    "check",
    "check_loaded",
    "default_config",
    "format_problem",
    "load_checked",
    "main",
    "step_text",
    "summary",
]
