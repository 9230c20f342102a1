"""The README's two commands stay true: CI runs the README's test command."""
from __future__ import annotations

import re

from conftest import REPO


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (REPO / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    test_command = next(b for b in bash_blocks() if "pytest" in b)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command.strip() in [line.strip() for line in ci]


def test_readme_starts_the_app():
    assert any("python3 app.py" in b for b in bash_blocks())
