"""The flow language: pydantic v2 models of what an organiser writes in flows.yaml.

The models validate shape and types only. Cross-references (unknown step targets, unknown
placeholders, unreachable steps, missing media, duplicate ids) are checked by `flows.check`,
which has the source positions to point at.

A step is a mapping whose *kind key* says what it is: `say`, `ask`, `choose`, `branch`,
`evidence` (an `ask` whose answer is campaign evidence), `action` or `end`.
Steps run in list order unless a step says `goto`.
"""

from __future__ import annotations

import enum
import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Deep-link refs follow the strictest platform's rule (Telegram /start payload).
REF = r"^[A-Za-z0-9_-]{1,64}$"
FIELD = r"^[a-z_][a-z0-9_]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ExpectKind(enum.Enum):
    TEXT = "text"
    NUMBER = "number"
    EMAIL = "email"
    PHONE = "phone"
    CCCD = "cccd"
    DATE = "date"
    CHOICE = "choice"
    UNIT = "unit"
    IMAGE = "image"
    FILE = "file"
    YES_NO = "yes_no"


class Expect(_Model):
    """A normalised `expect:`. YAML may write `expect: email`, `expect: {text: {min: 4}}`,
    `expect: {number: {min: 1, max: 100}}` or `expect: {choice: [A, B]}`."""

    kind: ExpectKind
    min: float | None = None  # text: characters; number: value
    max: float | None = None
    options: tuple[str, ...] = ()  # choice
    min_date: date | None = None  # date
    max_date: date | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"kind": value}
        if isinstance(value, dict) and "kind" not in value and len(value) == 1:
            ((kind, params),) = value.items()
            if kind == "choice":
                return {"kind": kind, "options": params}
            if params is None:
                return {"kind": kind}
            if isinstance(params, dict):
                params = dict(params)
                if kind == "date":
                    for k in ("min", "max"):
                        if k in params:
                            params[f"{k}_date"] = params.pop(k)
                return {"kind": kind, **params}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Expect:
        if self.kind is ExpectKind.CHOICE and len(self.options) < 2:
            raise ValueError("kiểu choice cần ít nhất 2 lựa chọn")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min lớn hơn max")
        return self


class ChoiceItem(_Model):
    title: str = Field(min_length=1)
    goto: str | None = None  # a step id of this flow, or a flow id
    synonyms: tuple[str, ...] = ()  # extra words that pick this choice


class Condition(_Model):
    """A small declarative condition on saved fields: no Python eval.

    Exactly one form: `{field: f, equals: v}`, `{field: f, in: [..]}`, `{field: f, exists: true}`,
    `{not: cond}`, `{all: [cond, ..]}`, `{any: [cond, ..]}`."""

    field: str | None = Field(default=None, pattern=FIELD)
    equals: str | int | float | bool | None = None
    in_: tuple[str | int | float, ...] | None = Field(default=None, alias="in")
    exists: bool | None = None
    not_: Condition | None = Field(default=None, alias="not")
    all: tuple[Condition, ...] | None = None
    any: tuple[Condition, ...] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        tests = [self.equals is not None, self.in_ is not None, self.exists is not None]
        combinators = [self.not_ is not None, self.all is not None, self.any is not None]
        if self.field is not None:
            if sum(tests) != 1 or any(combinators):
                raise ValueError("điều kiện trên một trường cần đúng một trong: equals, in, exists")
        elif sum(combinators) != 1 or any(tests):
            raise ValueError("điều kiện cần 'field' hoặc đúng một trong: not, all, any")
        return self


class BranchCase(_Model):
    if_: Condition = Field(alias="if")
    goto: str


class WhenNo(_Model):
    """What a yes/no question does on "no" (e.g. consent refused)."""

    say: str | None = None
    goto: str | None = None


class _Step(_Model):
    id: str | None = Field(default=None, pattern=FIELD)
    goto: str | None = None  # where to go after this step instead of the next in the list
    image: str | None = None  # path relative to the YAML file (e.g. a sample screenshot)


class SayStep(_Step):
    say: str
    choices: tuple[ChoiceItem, ...] = ()


class AskStep(_Step):
    ask: str
    expect: Expect = Field(default_factory=lambda: Expect(kind=ExpectKind.TEXT))
    save: str | None = Field(default=None, pattern=FIELD)
    retry: str | None = None
    max_retries: int = Field(default=3, ge=1, le=10)
    when_no: WhenNo | None = None  # only for expect: yes_no


class EvidenceStep(AskStep):
    evidence: str = Field(pattern=FIELD)


class ChooseStep(_Step):
    choose: str
    choices: tuple[ChoiceItem, ...] = Field(min_length=1)
    retry: str | None = None
    max_retries: int = Field(default=3, ge=1, le=10)


class BranchStep(_Step):
    branch: tuple[BranchCase, ...] = Field(min_length=1)
    else_: str | None = Field(default=None, alias="else")


class ActionKind(enum.Enum):
    SUBMIT = "submit"  # submit the campaign submission for review
    NOTIFY = "notify"  # notify organisers
    TAG = "tag"
    REFERRAL = "referral"  # record a referral credit from the entry ref
    HANDOVER = "handover"  # hand the conversation to a human
    GOTO = "goto"  # go to another flow
    REPORT = "report"  # record an entry from this run's answers (a cadre reporting a citizen)


class ActionStep(_Step):
    action: ActionKind
    say: str | None = None
    text: str | None = None  # notify: what organisers read
    tag: str | None = None
    flow: str | None = None  # goto: the flow to start
    report: str | None = Field(default=None, pattern=FIELD)  # report: the kind of entry

    @model_validator(mode="after")
    def _params(self) -> ActionStep:
        if self.action is ActionKind.TAG and not self.tag:
            raise ValueError("action: tag cần khóa 'tag'")
        if self.action is ActionKind.GOTO and not self.flow:
            raise ValueError("action: goto cần khóa 'flow'")
        if self.action is ActionKind.REPORT and not self.report:
            raise ValueError("action: report cần khóa 'report' (loại mục ghi nhận, VD: cong_dan)")
        return self


class EndStep(_Step):
    end: str | None = None  # optional closing text


# Order matters: `evidence` carries an `ask` and `action` may carry a `say`, so both are
# recognised before the keys they contain.
STEP_KINDS = ("evidence", "action", "say", "ask", "choose", "branch", "end")


def step_kind(value: Any) -> str | None:
    """The kind key of a raw step mapping (evidence wins over ask, action over its say)."""
    if isinstance(value, dict):
        for kind in STEP_KINDS:
            if kind in value:
                return kind
    elif isinstance(value, _Step):
        return {
            EvidenceStep: "evidence",
            SayStep: "say",
            AskStep: "ask",
            ChooseStep: "choose",
            BranchStep: "branch",
            ActionStep: "action",
            EndStep: "end",
        }[type(value)]
    return None


Step = Annotated[
    Annotated[EvidenceStep, Tag("evidence")]
    | Annotated[SayStep, Tag("say")]
    | Annotated[AskStep, Tag("ask")]
    | Annotated[ChooseStep, Tag("choose")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[ActionStep, Tag("action")]
    | Annotated[EndStep, Tag("end")],
    Discriminator(
        step_kind,
        custom_error_type="step_kind",
        custom_error_message="bước cần một trong các khóa: say, ask, choose, branch, "
        "evidence, action, end",
    ),
]


class Flow(_Model):
    title: str | None = None
    campaign: str | None = None  # evidence steps belong to this campaign
    requires: str | None = None  # a flow the person must have finished first (registration)
    steps: tuple[Step, ...] = Field(min_length=1)


class Wave(_Model):
    name: str
    from_: date = Field(alias="from")
    to: date

    @model_validator(mode="after")
    def _ordered(self) -> Wave:
        if self.to < self.from_:
            raise ValueError("ngày 'to' đứng trước ngày 'from'")
        return self


class Campaign(_Model):
    title: str
    waves: tuple[Wave, ...] = ()
    closed: str | None = None  # answer outside every wave
    retention_days: int | None = Field(default=None, ge=1)


class LinkTarget(_Model):
    flow: str
    ref: str | None = None  # a cadre referral code recorded with the entry


Quota = Annotated[str, Field(pattern=r"^\d{1,3}(\.\d+)?%$")] | int


class OrgNode(_Model):
    name: str
    members: int | None = Field(default=None, ge=0)
    quota: Quota | None = None
    area: str | None = None  # khu vực: units are ranked within their area
    units: str | None = None  # a CSV file of units (relative to the YAML file)
    children: dict[str, OrgNode] = Field(default_factory=dict)
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    links: dict[str, str | LinkTarget] = Field(default_factory=dict)
    menu: str | None = None  # the flow shown on first contact and for "menu"

    @field_validator("children")
    @classmethod
    def _slugs(cls, value: dict[str, OrgNode]) -> dict[str, OrgNode]:
        for slug in value:
            if not re.match(SLUG, slug):
                raise ValueError(f"mã đơn vị '{slug}' chỉ gồm chữ thường không dấu, số, - và _")
        return value

    @field_validator("links")
    @classmethod
    def _refs(cls, value: dict[str, str | LinkTarget]) -> dict[str, str | LinkTarget]:
        for ref in value:
            if not re.match(REF, ref):
                raise ValueError(
                    f"mã liên kết '{ref}' chỉ gồm A-Z, a-z, 0-9, _ và -, tối đa 64 ký tự"
                )
        return value


class Bundle(_Model):
    """A whole deployment: what `flows.yaml` (with its includes) describes."""

    include: tuple[str, ...] = ()  # other YAML files merged into this one
    menu: str | None = None  # default menu flow for districts that name none
    organisations: dict[str, OrgNode] = Field(default_factory=dict)
    campaigns: dict[str, Campaign] = Field(default_factory=dict)
    flows: dict[str, Flow] = Field(default_factory=dict)
    timezone: Literal["Asia/Ho_Chi_Minh"] = "Asia/Ho_Chi_Minh"
