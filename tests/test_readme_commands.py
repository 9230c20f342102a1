"""Every command of the README runs as written, with its placeholders (car.jpg, a.jpg, b.jpg, my_photos/,
the data folders) replaced by real files: the command-line quick start, the three Python quick starts
(the zoo, the Hub convention against the tests' Hub server, the app's HTTP API against a running app),
and the Results section's evaluate commands. The two set-up commands are CI's own (tests/test_readme.py)
and the install commands are tests/test_install.py's.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, seed_cache

pytestmark = pytest.mark.slow
README = (REPO / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", README, flags=re.S)


def block_with(language: str, text: str) -> str:
    return next(b for b in blocks(language) if text in b)


def commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def places(tmp_path_factory, khoa_pair, khoa_root, cars_root, gallery_cache) -> dict[str, str]:
    """Each placeholder of the README and the real file or folder it stands for. The commands share one
    RNNHA_CACHE, seeded with the shipped gallery's embeddings (conftest.gallery_cache) as a user's cache
    is after the first run; the CLI and the app verify it before use."""
    import layouts

    work = tmp_path_factory.mktemp("readme")
    seed_cache(work / "cache", gallery_cache)
    photos = work / "my_photos"
    photos.mkdir()
    for source in sorted((REPO / "assets" / "gallery").glob("*.jpg"))[:6]:
        shutil.copy(source, photos / source.name)
    layouts.write_veri(work / "data" / "VeRi", khoa_root)
    a, b, _ = khoa_pair
    return {"car.jpg": str(a), "a.jpg": str(a), "b.jpg": str(b), "my_photos/": str(photos),
            "../shared/data/khoa-vehicle-reid": str(khoa_root),
            "../shared/data/stanford-cars": str(cars_root), "work": str(work)}


def substitute(text: str, places: dict[str, str]) -> str:
    for placeholder, real in places.items():
        if placeholder != "work":  # the working folder, with the cache in it
            text = re.sub(rf"(?<![\w/.-]){re.escape(placeholder)}(?![\w])", real, text)
    return text


def run(command: str, cwd: str, expect: int = 0) -> subprocess.CompletedProcess:
    args = command.split()
    if args[0] == "rnnha":  # the console script is tests/test_install.py's; here its module, uninstalled
        args = [sys.executable, "-m", "zoo.cli", *args[1:]]
    elif args[0] in ("python", "python3"):
        args[0] = sys.executable
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                               "RNNHA_CACHE": str(Path(cwd) / "cache")})
    assert proc.returncode == expect, (command, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_line_quick_start(places):
    block = block_with("bash", "rnnha identify")
    lines = commands(block)
    assert [line.split()[1] for line in lines] == ["identify", "identify", "compare", "train", "evaluate", "app"]
    for line in lines:
        command = substitute(line, places)
        if " train " in f" {command} ":  # the paper's recipe on a miniature VeRi folder, one short epoch
            command += (" epochs=1 batch_size=4 max_steps_per_epoch=2 workers=0 model.input_size=64"
                        " model.pretrained_backbone=false")
            command = command.replace("configs/", f"{REPO}/configs/")
            out = run(command, places["work"]).stdout
            assert "checkpoints: runs/resnet50_veri/last.safetensors" in out and "test: VeRi-776 mAP" in out
        elif command.split()[1] == "app":
            port = _free_port()
            proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "app"], cwd=places["work"],
                                    env={**os.environ, "PYTHONPATH": str(REPO), "GRADIO_SERVER_PORT": str(port),
                                         "RNNHA_CACHE": str(Path(places["work"]) / "cache")},
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                import httpx

                deadline = time.time() + 180
                while time.time() < deadline:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(1)
                else:
                    pytest.fail("rnnha app did not serve within 180 s")
            finally:
                proc.terminate()
                proc.wait(30)
        else:
            out = run(command, places["work"]).stdout
            assert out.strip(), command
            if "compare" in command:
                assert "same vehicle" in out
            if "--json" in command:
                import json

                assert len(json.loads(out)["matches"]) == 5
            if "evaluate" in command:
                assert "mAP" in out and "the paper's rows" in out


def test_the_python_quick_starts(places, tmp_path, monkeypatch):
    from hubserver import HubServer, hub_env

    monkeypatch.chdir(tmp_path)
    zoo_block = substitute(block_with("python", "load_model"), places)
    exec(compile(zoo_block, "README: In Python", "exec"), {})
    hub_block = block_with("python", "from_pretrained").replace('"assets/default"', f'"{REPO / "assets" / "default"}"')
    with HubServer() as server, hub_env(server, tmp_path / "cache"):
        exec(compile(hub_block, "README: from_pretrained", "exec"), {})
        assert sorted(server.repo_files("my-org/my-model")) == ["README.md", "config.json", "model.safetensors"]
    assert (tmp_path / "my_model" / "model.safetensors").is_file()


def test_the_http_api_quick_start(places, app_server):
    block = substitute(block_with("python", "gradio_client"), places).replace("http://127.0.0.1:7860/", app_server)
    scope: dict = {}
    exec(compile(block, "README: HTTP API", "exec"), scope)
    assert len(scope["car_model"]["confidences"]) == 5 and scope["matches"]["data"]
    assert isinstance(scope["similarity"], (int, float, str)) and scope["verdict"]
    assert scope["path"].startswith("**") and " · car " in scope["path"] and " % " in scope["path"]
    assert "probability of the same vehicle" in scope["verdict"] and scope["picture"]  # the calibration pairs


def test_the_results_commands_reproduce_the_card(places):
    """The README's Results commands, run as written, print the figures of the default model's card
    (assets/default/config.json), each within the tolerance of the precision this CPU runs."""
    import json

    from rnnha.predictor import cpu_supports_bf16

    card = json.loads((REPO / "assets" / "default" / "config.json").read_text())["metrics"]
    # the card was measured in fp32 (a CPU without native bf16, as CI's); a CPU with AVX-512 BF16 runs
    # bf16, which moves the figures by up to about a point (percent) and a hundredth (ECE)
    bf16 = cpu_supports_bf16()
    tolerance, ece_tolerance = (1.2, 0.02) if bf16 else (0.5, 0.005)
    lines = commands(block_with("bash", "rnnha.evaluate --model default"))
    assert [line.split("--dataset ")[1].split()[0] for line in lines] == ["two-camera", "stanford-cars"]
    for line in lines:
        result = json.loads(run(substitute(line, places), places["work"]).stdout)
        expected = card[result["dataset"]]
        # every level: re-id and the type on the validation crops; the car model on the holdout; each
        # coarse level's calibration error (ECE, 15 bins) with the folder's temperatures
        keys = ("mAP", "rank1", "rank5", "type_top1") if result["dataset"] == "two-camera" else ("top1",)
        eces = [k for k in expected if k.endswith("ece")]
        assert len(eces) == 1, expected
        assert {k: result[k] for k in keys} == pytest.approx({k: expected[k] for k in keys}, abs=tolerance)
        assert {k: result[k] for k in eces} == pytest.approx({k: expected[k] for k in eces}, abs=ece_tolerance)
        if result["dataset"] == "stanford-cars":
            assert result["num_images"] == 742
