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


def test_space_front_matter_matches_requirements():
    import yaml

    text = (REPO / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (REPO / meta["app_file"]).is_file()
    pin = re.search(r"^gradio(?:\[[\w,]+\])?==([\d.]+)", (REPO / "requirements.txt").read_text(), flags=re.M)
    assert pin and meta["sdk_version"] == pin.group(1)
    assert meta["license"] and meta["python_version"]
