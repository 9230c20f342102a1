"""The deployment path to a Hugging Face Space (rnnha.hub.push_space, `python -m rnnha.hub push-space`)
taken against the tests' Hub-protocol server: exactly the files git tracks go up (the 23 MB weights
included, which a plain git push to the Hub would have refused), through the real huggingface_hub client."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from hubserver import HubServer, hub_env
from rnnha.hub import HubError, push_space

FRONT = "---\ntitle: demo\nsdk: gradio\napp_file: app.py\n---\n# demo\n"


def git_repo(path, files: dict[str, str]):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return path


@pytest.fixture
def hub(tmp_path):
    with HubServer() as server, hub_env(server, tmp_path / "hf") as env:
        yield server, env


def test_the_checkout_goes_up_as_git_tracks_it(hub):
    server, _ = hub
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tracked = [name for name in tracked if (REPO / name).is_file()]  # as committed or as edited now
    url = push_space("org/demo")
    assert url.startswith(server.url) and server.repo_exists("org/demo", repo_type="space")
    files = server.repo_files("org/demo", repo_type="space")
    assert sorted(files) == sorted(tracked)
    for name in ("assets/default/model.safetensors", "app.py", "README.md"):
        assert files[name] == (REPO / name).read_bytes()
    assert len(files["assets/default/model.safetensors"]) > 10 * 2**20  # what git push could not send


def test_untracked_files_stay_behind_and_bad_roots_are_refused(hub, tmp_path):
    server, _ = hub
    root = git_repo(tmp_path / "project", {"app.py": "print('app')\n", "README.md": FRONT, ".gitignore": "runs/\n"})
    (root / "runs").mkdir()
    (root / "runs" / "junk.txt").write_text("an experiment's output")
    (root / "notes.txt").write_text("untracked")
    push_space("org/small", root)
    push_space("org/small", root)  # the Space exists already: fine
    assert sorted(server.repo_files("org/small", repo_type="space")) == [".gitignore", "README.md", "app.py"]
    plain = tmp_path / "plain"  # no git checkout: the folder less the ignore patterns
    plain.mkdir()
    (plain / "app.py").write_text("print('app')\n")
    (plain / "README.md").write_text(FRONT)
    (plain / "runs").mkdir()
    (plain / "runs" / "junk.txt").write_text("x")
    push_space("org/plain", plain)
    assert sorted(server.repo_files("org/plain", repo_type="space")) == ["README.md", "app.py"]
    no_app = git_repo(tmp_path / "no-app", {"README.md": FRONT})
    with pytest.raises(HubError, match="has no app.py"):
        push_space("org/x", no_app)
    no_front = git_repo(tmp_path / "no-front", {"app.py": "", "README.md": "# just a readme\n"})
    with pytest.raises(HubError, match="no Space front matter"):
        push_space("org/x", no_front)
    assert not server.repo_exists("org/x", repo_type="space")


def test_the_command_line(hub, tmp_path):
    server, _ = hub
    root = git_repo(tmp_path / "project", {"app.py": "print('app')\n", "README.md": FRONT})
    command = [sys.executable, "-m", "rnnha.hub", "push-space", "org/cli", "--root", str(root)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(server.url) and server.repo_exists("org/cli", repo_type="space")
    server.fail_all = True  # the Hub answers 503 to everything
    failed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 1 and failed.stderr.startswith("error: deploying")
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
