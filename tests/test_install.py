"""The package installs (`pip install .` and `pip install -e .`), and from a folder outside the repository,
offline, the `rnnha` command and `from zoo import load_model` work with the default model shipped inside.

Each install goes into a fresh virtual environment that sees this machine's packages
(--system-site-packages, so torch is not downloaded again; its pip and setuptools too) and installs only
this project (--no-deps),
from a copy of the checkout's tracked files.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, seed_cache

pytestmark = pytest.mark.slow


def run(args, cwd, expect=0, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**clean, "HF_HUB_OFFLINE": "1", **env})
    assert proc.returncode == expect, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The tracked files of the checkout (what a clone has)."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    copy = tmp_path_factory.mktemp("clone") / "rnnha"
    for name in files:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    return copy


def install(tmp_path_factory, source: Path, editable: bool) -> Path:
    venv = tmp_path_factory.mktemp("venv-editable" if editable else "venv")
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=venv)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         *(["-e"] if editable else []), str(source)], cwd=venv)
    return venv


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_installed_package_works_from_any_folder_offline(editable, source, tmp_path_factory, khoa_pair,
                                                       gallery_cache):
    """Everything through a regular install; an editable one (whose code is the same checkout's) is
    checked for what differs: where it imports from, and that its console script runs."""
    venv = install(tmp_path_factory, source, editable)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    # the shipped gallery's embeddings, as a user's cache holds them after the first run (verified before use)
    cache = {"RNNHA_CACHE": str(seed_cache(elsewhere / "cache", gallery_cache)), "HOME": str(elsewhere)}
    python, rnnha = venv / "bin" / "python", venv / "bin" / "rnnha"
    code = ("import zoo, rnnha; from zoo import load_model; p = load_model('default', device='cpu'); "
            "print(zoo.__file__); print(p.info.threshold)")
    where, threshold = run([str(python), "-c", code], elsewhere, **cache).stdout.split()
    # a regular install reads the copy in the environment; an editable one the checkout it points at
    assert Path(where).is_relative_to(source if editable else venv), where
    assert float(threshold) == json.loads((REPO / "assets" / "default" / "config.json").read_text())["same_vehicle_threshold"]

    a, b, other = (str(p) for p in khoa_pair)
    same = run([str(rnnha), "compare", a, b], elsewhere, **cache).stdout
    assert same.startswith("cosine similarity ") and "same vehicle" in same
    if editable:
        return
    verdict = json.loads(run([str(rnnha), "compare", a, other, "--json"], elsewhere, expect=1, **cache).stdout)
    assert verdict["same_vehicle"] is False and verdict["similarity"] < verdict["threshold"]
    found = json.loads(run([str(rnnha), "identify", a, "--json"], elsewhere, **cache).stdout)
    assert len(found["top"]) == 5 and found["level"] == "model"
    assert found["matches"][0]["vehicle"] == "car_0139" and found["matches"][0]["correct"] is True
    printed = run([str(rnnha), "identify", a], elsewhere, **cache).stdout
    assert "closest of" in printed and "same vehicle" in printed
    error = run([str(rnnha), "identify", str(elsewhere / "missing.jpg")], elsewhere, expect=2, **cache)
    assert error.stderr.startswith("error: ") and "Traceback" not in error.stderr
    for command in ("identify", "compare", "train", "evaluate", "export", "push", "bench"):
        assert "usage:" in run([str(rnnha), command, "--help"], elsewhere, **cache).stdout
