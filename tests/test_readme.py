"""Every Python example in README.md runs as printed (from the repository root, on the
local copy of the dataset)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_readme_example_runs(number, fashion_mnist, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the examples name ../shared/fashion_mnist from here
    namespace: dict = {}
    exec(compile(EXAMPLES[number], f"README.md example {number}", "exec"), namespace)
    assert "sample" in namespace or "search" in namespace


def test_the_readme_stays_a_guide_under_400_lines():
    """Detail goes to docs/; the README says what a user can do."""
    assert len((ROOT / "README.md").read_text().splitlines()) < 400
