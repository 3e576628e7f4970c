"""Pydantic validation errors of the flow language turned into Vietnamese problems at the
place the organiser wrote the value (following each error's `loc` through the data as
written, past union and discriminator tags)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from flows import schema
from flows.problems import NodePath, PathPart, Pos, Positions, Problem
from flows.schema import Bundle, step_kind
from flows.suggest import closest, did_you_mean, fold, slugify

_KEY_SYNONYMS = {  # Vietnamese words organisers may type as keys
    "hoi": "ask", "cau hoi": "ask", "noi": "say", "tin nhan": "say", "luu": "save",
    "chon": "choose", "lua chon": "choices", "anh": "image", "hinh": "image", "hinh anh": "image",
    "ten": "title", "tieu de": "title", "ket thuc": "end", "minh chung": "evidence",
    "den": "goto", "toi": "goto", "chuyen": "goto", "kieu": "expect", "nhap lai": "retry",
    "dot": "waves", "buoc": "steps", "cac buoc": "steps", "kich ban": "flows",
    "chien dich": "campaign", "don vi": "units", "chi tieu": "quota",
}


def _model_for(path: NodePath, node: Any) -> type[BaseModel] | None:
    """The schema model describing the mapping at `path` (for listing its allowed keys)."""
    models: dict[str, type[BaseModel]]
    if not path:
        return Bundle
    last = path[-1]
    parent = path[-2] if len(path) >= 2 else None
    if isinstance(last, int):
        if parent == "steps":
            models = {
                "evidence": schema.EvidenceStep, "say": schema.SayStep, "ask": schema.AskStep,
                "choose": schema.ChooseStep, "branch": schema.BranchStep,
                "action": schema.ActionStep, "end": schema.EndStep,
            }
            return models.get(step_kind(node) or "")
        models = {"choices": schema.ChoiceItem, "branch": schema.BranchCase, "waves": schema.Wave,
                  "all": schema.Condition, "any": schema.Condition}
        return models.get(str(parent))
    if len(path) == 2 and parent == "flows":
        return schema.Flow
    if len(path) == 2 and parent == "campaigns":
        return schema.Campaign
    if path[0] == "organisations" and (len(path) == 2 or parent == "children"):
        return schema.OrgNode
    if parent == "links":
        return schema.LinkTarget
    models = {"expect": schema.Expect, "when_no": schema.WhenNo, "if": schema.Condition,
              "not": schema.Condition}
    return models.get(str(last))


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    keys = [f.alias or name for name, f in model.model_fields.items()]
    if model is schema.Expect:
        return [k.value for k in schema.ExpectKind]
    return keys


def _locate(
    data: Any, loc: tuple[Any, ...], missing: bool
) -> tuple[NodePath, tuple[str, ...], bool]:
    """Follow a pydantic error location through the data as written.

    Returns the data path, the trailing names not present in the data (a missing field), and
    whether a union member tag was skipped on the way."""
    cur = data
    path: list[PathPart] = []
    skipped = False
    tag_skipped = -1
    i = 0
    while i < len(loc):
        elem = loc[i]
        last = i == len(loc) - 1
        if isinstance(cur, dict):
            in_steps = len(path) >= 2 and path[-2] == "steps" and isinstance(path[-1], int)
            if in_steps and tag_skipped != len(path) and elem == step_kind(cur) and not last:
                tag_skipped = len(path)  # the union tag, then the kind key of the same name
                i += 1
                continue
            shorthand = bool(path) and path[-1] == "expect" and len(cur) == 1 \
                and "kind" not in cur
            if shorthand:
                ((kind, params),) = cur.items()
                if kind in _KINDS and kind != "choice" and params is not None \
                        and not isinstance(params, dict):
                    # `expect: {text: 4}`: pydantic sees no kind and an unknown key.
                    return (*path, kind), (_BAD_PARAMS,), skipped
            if shorthand and elem not in cur:
                if elem == "kind":
                    path.append(kind)
                    break
                if elem == "options" and isinstance(params, list):
                    path.append(kind)
                    cur = params
                    i += 1
                    continue
                if isinstance(params, dict):
                    path.append(kind)
                    cur = params
                    if elem in ("min_date", "max_date"):
                        elem = elem[:3]
                        if elem in cur:
                            path.append(elem)
                            cur = cur[elem]
                            i += 1
                    continue
            if elem in cur:
                path.append(elem)
                cur = cur[elem]
            elif last and missing:
                return tuple(path), (str(elem),), skipped
            else:
                skipped = True
        elif isinstance(cur, list) and isinstance(elem, int) and 0 <= elem < len(cur):
            path.append(elem)
            cur = cur[elem]
        else:
            skipped = skipped or not isinstance(elem, int)
        i += 1
    return tuple(path), (), skipped


def _node(data: Any, path: NodePath) -> Any:
    cur = data
    for part in path:
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


_ID_FIELDS = {"id", "save", "evidence", "field"}
_KINDS = {k.value for k in schema.ExpectKind}
_BAD_PARAMS = "\0params"  # marker: shorthand expect parameters that are not a mapping
GUIDE_HINT = "xem cách viết trong docs/huong-dan-kich-ban.md"
# Hints for the schema's own (Vietnamese) validation messages, by a phrase of the message.
_VALUE_HINTS = (
    ("kiểu choice", "VD: expect: {choice: [Android, iPhone]}"),
    ("min lớn hơn max", "đổi chỗ hai giá trị min và max"),
    ("điều kiện", "VD: if: {field: he_dieu_hanh, equals: Android}"),
    ("ngày 'to'", "kiểm tra lại ngày bắt đầu (from) và ngày kết thúc (to)"),
    ("cần khóa 'tag'", "thêm dòng 'tag: <nhãn>' vào bước này"),
    ("cần khóa 'flow'", "thêm dòng 'flow: <tên kịch bản>' vào bước này"),
)
_KIND_NAMES = ", ".join(k.value for k in schema.ExpectKind)


def _describe(value: Any) -> str:
    if value is None:
        return "để trống"
    if isinstance(value, dict):
        return "là một nhóm khóa"
    if isinstance(value, list):
        return "là một danh sách"
    if isinstance(value, bool):
        return f"là {'true' if value else 'false'}"
    return f"là '{value}'"


def _translate(
    error: Any, data: Any, path: NodePath, missing: tuple[str, ...], union: bool,
    positions: Positions,
) -> tuple[Pos, str, str]:
    kind: str = error["type"]
    ctx = error.get("ctx") or {}
    value = _node(data, path)
    name = str(path[-1]) if path else "tệp"
    label = f"'{name}'"  # how the node is named in messages
    if path and isinstance(path[-1], int) and len(path) >= 2:
        label = f"mục {path[-1] + 1} của '{path[-2]}'"
    if missing == (_BAD_PARAMS,):
        return (positions.key(path), f"tham số của kiểu '{path[-1]}' viết chưa đúng",
                f"VD: expect: {{{path[-1]}: {{min: 1, max: 10}}}}")
    if missing:
        field_name = missing[0]
        pos = positions.key(path)
        if field_name == "kind" and path and path[-1] == "expect":
            return pos, "expect cần một kiểu câu trả lời", f"các kiểu: {_KIND_NAMES}"
        where = f" trong {label}" if path else ""
        return pos, f"thiếu khóa '{field_name}'{where}", f"thêm dòng '{field_name}: ...'"
    if kind == "extra_forbidden":
        pos = positions.key(path)
        parent = path[:-1]
        if len(parent) >= 2 and parent[-2] == "expect":
            allowed = ["min", "max"]  # parameters of `expect: {kind: {...}}`
        else:
            model = _model_for(parent, _node(data, parent))
            allowed = _allowed_keys(model) if model else []
        suggestion = _KEY_SYNONYMS.get(fold(name)) if fold(name) in _KEY_SYNONYMS else None
        suggestion = suggestion if suggestion in allowed else closest(name, allowed)
        message = f"khóa không hợp lệ '{name}'"
        if suggestion:
            message += f" — có phải ý bạn là '{suggestion}'?"
        hint = f"các khóa dùng được ở đây: {', '.join(allowed)}" if allowed else "xóa khóa này"
        if " " in name and value is None:
            hint = "trong { }, dấu phẩy tách các khóa: câu có dấu phẩy phải đặt trong ngoặc kép"
        return pos, message, hint
    pos = positions.at(path)
    if kind == "step_kind":
        keys = list(value) if isinstance(value, dict) else []
        guess = None
        for key in keys:
            guess = _KEY_SYNONYMS.get(fold(key)) or closest(key, schema.STEP_KINDS)
            if guess in schema.STEP_KINDS:
                break
            guess = None
        if isinstance(value, str):
            first = value.split(" ", 1)[0]
            if first in schema.STEP_KINDS:
                return (pos, "bước này không có khóa nào",
                        f"thiếu dấu ':' sau '{first}'? viết '{first}: ...'")
        message = "bước không rõ loại: cần một trong các khóa say, ask, choose, branch, " \
                  "evidence, action, end"
        if guess and keys:
            return pos, message, f"có phải ý bạn là '{guess}'?"
        return pos, message, "mỗi bước bắt đầu bằng '- say:', '- ask:', '- choose:', ..."
    if union and path and path[-1] == "quota":
        return (pos, f"chỉ tiêu {_describe(value)}: cần một số hoặc phần trăm",
                "VD: quota: 2356 hoặc quota: 40%")
    if union and len(path) >= 2 and path[-2] == "links":
        return (pos, f"liên kết '{name}' cần tên một kịch bản",
                "VD: huyhieuso: cong_dan_so, hoặc huyhieuso: {flow: cong_dan_so, ref: cb01}")
    if union and path and path[-1] in ("equals", "in"):
        return (pos, f"giá trị so sánh {_describe(value)}: cần văn bản, số hoặc true/false",
                "VD: equals: Android")
    if kind in ("string_type", "str_type"):
        if value is None:
            return pos, f"{label} đang để trống", "viết nội dung sau dấu ':'"
        hint = "đặt văn bản trong ngoặc kép"
        if isinstance(value, dict | list):
            hint = "văn bản bắt đầu bằng '{' hoặc '[' phải đặt trong ngoặc kép"
        return pos, f"{label} cần văn bản nhưng {_describe(value)}", hint
    if kind in ("int_parsing", "int_type", "int_from_float"):
        hint = "chỉ viết chữ số, VD: 3"
        if isinstance(value, float) and round(value * 1000) % 1000 and value < 1000:
            hint = f"không dùng dấu chấm ngăn cách hàng nghìn: viết {round(value * 1000)}"
        return pos, f"{label} cần một số nguyên nhưng {_describe(value)}", hint
    if kind in ("float_parsing", "float_type"):
        return pos, f"{label} cần một số nhưng {_describe(value)}", "chỉ viết chữ số, VD: 10"
    if kind in ("bool_parsing", "bool_type"):
        return pos, f"{label} cần true hoặc false nhưng {_describe(value)}", "VD: exists: true"
    if kind == "string_pattern_mismatch":
        if name == "quota":
            return pos, f"chỉ tiêu '{value}' không hợp lệ", "VD: quota: 2356 hoặc quota: 40%"
        if name in _ID_FIELDS:
            return (pos, f"'{value}' không dùng được làm tên: chỉ gồm chữ thường không dấu, số "
                    "và dấu _, bắt đầu bằng chữ",
                    f"VD: {slugify(str(value))}")
        return pos, f"'{value}' không đúng dạng yêu cầu ({ctx.get('pattern', '')})", ""
    if kind == "string_too_short" and value == "":
        return pos, f"{label} đang để trống", "viết nội dung sau dấu ':'"
    if kind in ("too_short", "string_too_short"):
        what = {"steps": "kịch bản cần ít nhất một bước", "choices": "cần ít nhất một lựa chọn",
                "branch": "branch cần ít nhất một trường hợp"}.get(name)
        return pos, what or f"{label} quá ngắn", "thêm ít nhất một mục"
    if kind in ("greater_than_equal", "greater_than"):
        return pos, f"{label} phải từ {ctx.get('ge', ctx.get('gt'))} trở lên", ""
    if kind in ("less_than_equal", "less_than"):
        return pos, f"{label} tối đa là {ctx.get('le', ctx.get('lt'))}", ""
    if kind in ("enum", "literal_error"):
        options = [o.strip(" '") for o in re.split(r",| or ", str(ctx.get("expected", "")))
                   if o.strip(" '")]
        message = f"'{value}' không hợp lệ cho '{name}'"
        if isinstance(value, str) and closest(value, options):
            message += f" — {did_you_mean(value, options)}"
        return pos, message, f"chọn một trong: {', '.join(options)}"
    if kind.startswith("date") or kind.startswith("datetime"):
        return (pos, f"{label} cần một ngày nhưng {_describe(value)}",
                "viết năm-tháng-ngày, VD: 2023-08-07")
    if kind in ("tuple_type", "list_type"):
        return (pos, f"{label} cần một danh sách nhưng {_describe(value)}",
                "mỗi mục một dòng bắt đầu bằng '- ', hoặc viết [a, b]")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return (pos, f"{label} cần các khóa con nhưng {_describe(value)}",
                "viết các dòng 'khóa: giá trị' thụt vào 2 dấu cách")
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        quoted = re.search(r"'([^']+)'", message)
        if quoted and isinstance(value, dict) and quoted.group(1) in value:
            pos = positions.key((*path, quoted.group(1)))
        hint = next((h for needle, h in _VALUE_HINTS if needle in message), "")
        if quoted and ("mã liên kết" in message or "mã đơn vị" in message):
            hint = f"VD: {slugify(quoted.group(1), '-')}"
        return pos, message, hint
    return pos, str(error["msg"]), ""


def schema_problems(data: dict[str, Any], error: ValidationError,
                     positions: Positions) -> list[Problem]:
    errors = error.errors()
    locs = [tuple(e["loc"]) for e in errors]
    grouped: dict[tuple[NodePath, tuple[str, ...]], tuple[Any, bool]] = {}
    for err, loc in zip(errors, locs, strict=True):
        if err["type"] == "too_short" and any(
            other != loc and other[: len(loc)] == loc for other in locs
        ):
            continue  # a list whose items all failed: the items' errors say why
        path, missing, union = _locate(data, loc, err["type"] == "missing")
        key = (path, missing)
        if key in grouped:
            grouped[key] = (grouped[key][0], True)
        else:
            grouped[key] = (err, union)
    extras = {path for (path, _), (err, _) in grouped.items() if err["type"] == "extra_forbidden"}
    problems = []
    for (path, missing), (err, union) in grouped.items():
        if missing and any(
            extra[:-1] == path and closest(str(extra[-1]), missing) for extra in extras
        ):
            continue  # a misspelt key: its "invalid key" problem already names the right one
        pos, message, hint = _translate(err, data, path, missing, union, positions)
        problems.append(Problem(pos.file, pos.line, pos.column, message, hint or GUIDE_HINT))
    return problems


__all__ = ["GUIDE_HINT", "schema_problems"]
