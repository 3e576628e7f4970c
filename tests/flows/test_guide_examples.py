"""Every example in the organisers' guide passes `loa check`.

Convention for docs/huong-dan-kich-ban.md: a ```yaml block is a whole flows file (it may omit
organisations and campaigns) and is checked on its own, as if saved next to the repository's
flows.yaml, so `media/...` and `data/...` paths resolve to the real sample files. A block whose
first line is a comment starting with `# mảnh` (a fragment, e.g. one step shown alone) is not
checked. Warnings are allowed; errors fail the test with the block's line in the guide.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from flows.check import check
from flows.loader import Problem

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "huong-dan-kich-ban.md"
FENCE = re.compile(r"^```ya?ml[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
FRAGMENT = "# mảnh"


def blocks(guide: Path = GUIDE) -> list[tuple[int, str]]:
    """(line in the guide, text) of every ```yaml block that is a whole file."""
    if not guide.exists():
        return []
    text = unicodedata.normalize("NFC", guide.read_text(encoding="utf-8"))
    found = []
    for match in FENCE.finditer(text):
        body = match.group(1)
        first = next((line.strip() for line in body.splitlines() if line.strip()), "")
        if first.startswith(FRAGMENT):
            continue
        found.append((text.count("\n", 0, match.start(1)) + 1, body))
    return found


def example_errors(body: str, folder: Path) -> list[Problem]:
    """Check one example saved as flows.yaml in `folder`, next to the real media and data."""
    for name in ("media", "data"):
        if (ROOT / name).is_dir():
            (folder / name).symlink_to(ROOT / name, target_is_directory=True)
    path = folder / "flows.yaml"
    path.write_text(body, encoding="utf-8")
    return [p for p in check(path) if p.is_error]


def test_extraction_follows_the_convention(tmp_path: Path) -> None:
    guide = tmp_path / "guide.md"
    guide.write_text(
        "# Hướng dẫn\n\n```yaml\nflows:\n  a:\n    steps:\n      - say: Chào {ho_ten}\n```\n"
        "\n```yaml\n# mảnh: một bước\n- say: Chào\n```\n\n```yml\nflows: {}\n```\n",
        encoding="utf-8",
    )
    found = blocks(guide)
    assert [line for line, _ in found] == [4, 16]
    (tmp_path / "one").mkdir()
    errors = example_errors(found[0][1], tmp_path / "one")
    assert [e.message for e in errors] == [
        "không có bước nào lưu trường 'ho_ten' để điền vào {ho_ten}"]


def test_guide_has_whole_file_examples() -> None:
    assert blocks(), f"{GUIDE.name} has no ```yaml example that is a whole file"


@pytest.mark.parametrize(
    ("line", "body"), blocks(), ids=[f"line{line}" for line, _ in blocks()]
)
def test_guide_example_passes_check(line: int, body: str, tmp_path: Path) -> None:
    errors = example_errors(body, tmp_path)
    assert not errors, f"{GUIDE.name}, example at line {line}:\n" + "\n".join(
        f"  {p.line + line - 1}:{p.column}: {p.message} (gợi ý: {p.hint})" for p in errors
    )
