"""Every recipe under configs/ runs end to end: a short epoch, its validation protocol and its test
protocol, each on a miniature dataset in its official layout written from real images (tests/layouts.py).

The recipes run unchanged but for their size (one epoch of two steps of 4 images at 64 px, no ImageNet
download), from a working directory laid out as the recipes expect: data/VeRi, data/VehicleID,
weights/vgg_cnn_m_1024.safetensors, and ../shared/data/ for the default model's recipes. Recipes that
start from another's weights (init_from) run after it, as configs/default/ship.sh runs them.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
import layouts

pytestmark = pytest.mark.slow

CONFIGS = REPO / "configs"
RECIPES = sorted(p for p in CONFIGS.rglob("*.yaml") if "_base" not in p.parts)
FRAGMENTS = sorted((CONFIGS / "_base").glob("*.yaml"))
QUICK = ["epochs=1", "batch_size=4", "max_steps_per_epoch=2", "workers=0", "model.input_size=64"]


def quick(recipe: Path) -> list[str]:
    """The overrides that make a recipe a smoke run: no ImageNet download for torchvision's ResNet-50."""
    from rnnha.train import _read_recipe

    model = _read_recipe(recipe).get("model", {})
    return QUICK + (["model.pretrained_backbone=false"] if model.get("backbone") == "resnet50" else [])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, khoa_root, cars_root, vehicleid_root):
    """tmp/work (the working directory) and tmp/shared/data, as a clone of the project sees them."""
    top = tmp_path_factory.mktemp("recipes")
    work = top / "work"
    layouts.write_veri(work / "data" / "VeRi", khoa_root)
    layouts.write_vehicleid(work / "data" / "VehicleID", vehicleid_root)
    layouts.write_two_camera(top / "shared" / "data" / "khoa-vehicle-reid", khoa_root)
    layouts.write_stanford_cars(top / "shared" / "data" / "stanford-cars", cars_root)
    write_vgg_weights(work / "weights" / "vgg_cnn_m_1024.safetensors")
    return work


def write_vgg_weights(path: Path) -> None:
    """What the README's converter command makes of a VGG_CNN_M_1024.caffemodel (here one written by
    tests/test_caffe.py's protobuf encoder, with random weights of the real shapes)."""
    import numpy as np

    import test_caffe as caffe
    from rnnha.caffe import convert_vgg_cnn_m_1024

    rng = np.random.default_rng(0)
    layers = []
    for name, shape in caffe.CONV_SHAPES.items():
        weight = (rng.standard_normal(shape) * (2 / np.prod(shape[1:])) ** 0.5).astype(np.float32)
        bias = np.zeros(shape[0], np.float32)
        layers.append(caffe.v1_layer(name, caffe.CONVOLUTION, [caffe.legacy_blob(weight), caffe.legacy_blob(bias)]))
    model = path.parent.parent / "VGG_CNN_M_1024.caffemodel"
    model.write_bytes(caffe.net("VGG_CNN_M_1024", layers))
    convert_vgg_cnn_m_1024(model, path)


_DONE: dict[Path, str] = {}


def run_recipe(recipe: Path, work: Path, monkeypatch, capsys) -> str:
    """Train a recipe once (its init_from source first); returns what it printed."""
    from rnnha.train import _read_recipe, main

    if recipe in _DONE:
        return _DONE[recipe]
    init_from = _read_recipe(recipe).get("init_from")
    if init_from and init_from.endswith(".safetensors"):  # another recipe's run (else a zoo name: shipped)
        source = next(r for r in RECIPES if Path(_read_recipe(r)["output"]) == Path(init_from).parent)
        run_recipe(source, work, monkeypatch, capsys)
    monkeypatch.chdir(work)
    capsys.readouterr()
    main(["--config", str(recipe), *quick(recipe)])
    _DONE[recipe] = capsys.readouterr().out
    return _DONE[recipe]


def test_every_fragment_is_a_base_and_recipes_hold_only_differences():
    import yaml

    named = {(recipe.parent / yaml.safe_load(recipe.read_text())["base"]).resolve()
             for recipe in RECIPES + FRAGMENTS if "base" in yaml.safe_load(recipe.read_text())}
    assert {f.resolve() for f in FRAGMENTS} <= named
    assert len(RECIPES) >= 13
    for recipe in RECIPES:  # what a recipe sets differs from what its base already says
        from rnnha.train import _read_recipe

        data = yaml.safe_load(recipe.read_text())
        if "base" not in data:
            continue
        base = _read_recipe(recipe.parent / data["base"])
        same = [k for k, v in data.items() if k not in ("base", "model") and base.get(k) == v]
        same += [f"model.{k}" for k, v in data.get("model", {}).items() if base.get("model", {}).get(k) == v]
        assert not same, f"{recipe.name} repeats its base's {same}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_recipe_trains_validates_and_tests_on_its_layout(recipe, workspace, monkeypatch, capsys):
    from rnnha.data import get_dataset
    from rnnha.train import TrainConfig

    printed = run_recipe(recipe, workspace, monkeypatch, capsys)
    cfg = TrainConfig.from_file(recipe, quick(recipe))
    out = workspace / cfg.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and (out / "last.safetensors").is_file()
    levels = cfg.model.get("level_names", ["model", "vehicle"])
    assert all(math.isfinite(rows[0][f"loss_{level}"]) for level in levels)
    assert "train.0 " + cfg.train[0]["kind"] in printed and "device cpu" in printed
    assert f"checkpoints: {cfg.output}/last.safetensors" in printed
    if cfg.init_from:
        assert f"init_from {cfg.init_from}: architecture from the source" in printed
        assert "loaded" in printed
    if cfg.val:
        val = rows[0]["val"]
        assert get_dataset(cfg.val["kind"]).score(val) is not None
        assert (out / "best.safetensors").is_file()
        if cfg.val["kind"] == "veri":  # 2 held-out training vehicles x 2 cameras, each image a query
            assert val["num_valid_queries"] == 4 and 0 < val["mAP"] <= 100 and "veri_matlab_mAP" in val
            assert "val: VeRi-776 mAP" in printed
        if cfg.val["kind"] == "two-camera":
            assert val["list"] == "val.txt" and val["cam1->cam2"]["num_queries"] == 6
    if cfg.test:
        test = json.loads((out / "test.json").read_text())
        assert test["weights"] == ("best.safetensors" if cfg.val else "last.safetensors")
        if cfg.test["kind"] == "vehicleid":
            assert set(test["result"]) == {"test800", "test1600", "test2400"}
            assert test["result"]["test800"]["repeats"] == 10
            assert [(r["row"], r["metric"]) for r in test["paper_rows"]] == [
                (f"VehicleID {name} ({size})", metric) for name, size in
                (("small", 800), ("medium", 1600), ("large", 2400)) for metric in ("top-1", "top-5")]
            assert "test: VehicleID small (800) top-1" in printed
        if cfg.test["kind"] == "veri":  # the 4 test vehicles' queries against the test images
            assert test["result"]["num_valid_queries"] == 4
            assert [(r["row"], r["metric"]) for r in test["paper_rows"]] == [
                ("VeRi-776", "mAP"), ("VeRi-776", "top-1"), ("VeRi-776", "top-5")]
            assert "test: VeRi-776 mAP" in printed


def _cli(args: list[str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def test_paper_veri_recipe_from_the_command_line(workspace, tmp_path):
    """`python -m rnnha.train --config configs/paper/resnet50_veri.yaml` with data/VeRi beside it:
    the VeRi protocol on held-out training vehicles every epoch, best.safetensors by that mAP, the test
    protocol on it after training, and `rnnha.evaluate` prints the same test figures as the paper's rows."""
    work = tmp_path / "clone"
    work.mkdir()
    (work / "data").symlink_to(workspace / "data", target_is_directory=True)
    recipe = CONFIGS / "paper" / "resnet50_veri.yaml"
    overrides = [o for o in quick(recipe) if not o.startswith("epochs=")] + ["epochs=3", "lr=1e-4"]
    _cli(["rnnha.train", "--config", str(recipe), *overrides], work)
    out = work / "runs" / "resnet50_veri"
    summary = json.loads((out / "summary.json").read_text())
    scores = [row["val"]["mAP"] for row in summary["history"]]
    assert len(scores) == 3 and summary["best_mAP"] == max(scores)
    assert summary["best_epoch"] == scores.index(max(scores)) + 1
    from rnnha.checkpoint import read_checkpoint

    assert read_checkpoint(out / "best.safetensors")[1]["epoch"] == summary["best_epoch"]
    test = json.loads((out / "test.json").read_text())
    assert test["weights"] == "best.safetensors" and test["kind"] == "veri"
    printed = _cli(["rnnha.evaluate", "--model", str(out / "best.safetensors"), "--dataset", "veri",
                    "--root", "data/VeRi"], work).stdout
    table = printed[printed.index("the paper's rows"):].splitlines()
    assert [line.split()[:2] for line in table[1:]] == [["VeRi-776", "mAP"], ["VeRi-776", "top-1"],
                                                        ["VeRi-776", "top-5"]]
    ours = [float(line.split()[2]) for line in table[1:]]
    assert ours == pytest.approx([test["result"][k] for k in ("mAP", "rank1", "rank5")], abs=0.01)
    assert table[1].split()[3] == "56.80"  # the paper's figure beside ours (rnnha/paper.py)


CASES = {  # recipe, extra overrides, what the one line must say
    "no-weights": ("vggm_veri", [], "python -m rnnha.caffe VGG_CNN_M_1024.caffemodel weights/vgg_cnn_m_1024.safetensors"),
    "corrupt-weights": ("vggm_veri", [], "is not a readable weights file"),
    "no-data": ("resnet50_veri", [], "set train.0.root="),
    "wrong-level": ("resnet50_veri", ["model.level_names=[model,vehicle]"], "set model.level_names="),
    "batch": ("resnet50_vehicleid", ["batch_size=64"], "lower batch_size="),
    "test-options": ("resnet50_vehicleid", ["test.options.sizes=[700]"], "test: VehicleID test sizes are [800, 1600, 2400]"),
    "val-files": ("resnet50_veri", ["val.options.split=query"], "the VeRi protocol scores split 'test'"),
    "unknown-model": ("resnet50_veri", ["init_from=no-such-model"], "init_from=no-such-model: "),
    "used-output": ("resnet50_veri", [], "already holds a run (last.safetensors): pass --resume"),
}


@pytest.mark.parametrize("case", CASES)
def test_user_errors_are_one_line_naming_the_key(case, workspace, tmp_path, monkeypatch, capsys):
    """A recipe that cannot run stops before training, with one line that says what to change. One case
    runs as the user runs it (a process: exit status 1, one line on stderr, no traceback); the others
    call the same main() in this process, which is what that process runs."""
    recipe, extra, expected = CASES[case]
    work = tmp_path / "w"
    work.mkdir()
    if case != "no-data":
        (work / "data").symlink_to(workspace / "data", target_is_directory=True)
    if case == "corrupt-weights":
        (work / "weights").mkdir()
        (work / "weights" / "vgg_cnn_m_1024.safetensors").write_bytes(b"not safetensors")
    if case == "used-output":
        (work / "runs" / "resnet50_veri").mkdir(parents=True)
        (work / "runs" / "resnet50_veri" / "last.safetensors").write_bytes(b"an earlier run")
    small = [o for o in QUICK if not (case == "batch" and o.startswith("batch_size"))]
    args = ["--config", str(CONFIGS / "paper" / f"{recipe}.yaml"), *small, "model.pretrained_backbone=false", *extra]
    if case == "used-output":
        stderr = _cli(["rnnha.train", *args], work, expect=1).stderr
    else:
        from rnnha.train import main

        monkeypatch.chdir(work)
        with pytest.raises(SystemExit) as stop:
            main(args)
        stderr = capsys.readouterr().err + f"{stop.value.code}\n"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert expected in lines[0]
    runs = sorted(str(p.relative_to(work)) for p in (work / "runs").rglob("*")) if (work / "runs").exists() else []
    assert runs == (["runs/resnet50_veri", "runs/resnet50_veri/last.safetensors"] if case == "used-output" else [])


def test_init_from_default_fine_tunes_the_shipped_architecture(workspace, monkeypatch, capsys):
    """A recipe with no `model:` keys fine-tunes the (three-level) default model: the same architecture
    (levels, guidance width, BN necks, input size ...), every tensor loaded but the classifiers' rows of
    classes the source does not name."""
    import yaml

    from rnnha import RNNHA
    from rnnha.errors import ConfigError
    from rnnha.train import (TrainConfig, build_model_config, initialise_from, levels_of, load_training_data,
                             main, read_source, source_from_model)
    from zoo import resolve

    if not (REPO / "assets" / "default" / "config.json").is_file():
        pytest.skip("assets/default (the embedded default model) is missing")
    monkeypatch.chdir(workspace)
    recipe = workspace / "finetune.yaml"
    recipe.write_text(yaml.safe_dump({
        "init_from": "default",
        "train": [{"kind": "two-camera", "root": "../shared/data/khoa-vehicle-reid", "options": {"list_file": "train.txt"}},
                  {"kind": "stanford-cars", "root": "../shared/data/stanford-cars", "options": {"subset": "train"},
                   "labels": {"type": "car"}}],
        "epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1, "workers": 0, "optimizer": "adamw", "lr": 1e-4,
        "output": "runs/finetune_default"}))
    cfg = TrainConfig.from_file(recipe)
    source = source_from_model(resolve("default").build(), "default")
    with pytest.raises(ConfigError, match="model names resolve on the command line"):
        read_source("default")  # the library reads files; the command line resolves names
    _, labels, _ = load_training_data(cfg, levels_of(cfg, source.config))
    config = build_model_config(cfg, labels, source.config)
    shipped = source.config.to_dict()
    for key, value in config.to_dict().items():
        if key not in ("num_classes", "class_names", "pretrained_backbone"):
            assert value == shipped[key], key
    assert (config.transformer_hidden, config.neck, config.attention_pool) == (256, True, "sum")
    model = RNNHA(config)
    fresh = initialise_from(model, source)
    # the same four types: that classifier is copied whole; the car model's keeps the rows of the car
    # models the data names (initialised in part); the identities are new
    assert fresh == ["head.classifiers.1.weight", "head.classifiers.2.weight"]
    for name, tensor in model.state_dict().items():
        if name not in fresh:
            assert torch.equal(tensor, source.state[name]), name
    capsys.readouterr()
    main(["--config", str(recipe)])
    printed = capsys.readouterr().out
    total = len(model.state_dict())
    assert f"init_from default ({REPO / 'assets' / 'default'}): architecture from the source" in printed
    assert f"loaded {total - len(fresh)} of {total} tensors; re-initialised: {', '.join(fresh)}" in printed
    assert (workspace / "runs" / "finetune_default" / "last.safetensors").is_file()
    main(["--config", str(recipe), "--resume", "epochs=2"])  # the checkpoint's architecture, not the defaults
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "init_from" not in printed
    assert len((workspace / "runs" / "finetune_default" / "metrics.jsonl").read_text().splitlines()) == 2


def test_the_authors_two_stages_a_classifier_then_rnnha_from_its_backbone(workspace, monkeypatch, capsys):
    """docs/paper.md: fine-tune the backbone as a plain classifier, then train RNN-HA from it."""
    from rnnha.checkpoint import model_state, read_checkpoint
    from rnnha.train import main

    monkeypatch.chdir(workspace)
    recipe = str(CONFIGS / "paper" / "resnet50_veri.yaml")
    small = quick(CONFIGS / "paper" / "resnet50_veri.yaml")
    main(["--config", recipe, *small, "model.head=bnneck", "model.level_names=[vehicle]", "output=runs/stage1"])
    capsys.readouterr()
    main(["--config", recipe, *small, "init_from=runs/stage1/last.safetensors", "model.head=rnnha",
          "output=runs/stage2"])
    printed = capsys.readouterr().out
    assert "the recipe changes head: rnnha (source bnneck)" in printed
    first = model_state(read_checkpoint(workspace / "runs" / "stage1" / "last.safetensors")[0])
    backbone = [k for k in first if k.startswith("backbone.")]
    loaded = int(printed.split("loaded ")[1].split(" of ")[0])
    assert loaded >= len(backbone) and "re-initialised: head." in printed
    assert "backbone." not in printed.split("re-initialised: ")[1].splitlines()[0]
