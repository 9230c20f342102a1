"""rnnha/train.py on a slice of the real data: losses fall, --resume after a kill is exact, and
torchrun with two CPU processes (gloo) keeps both ranks' weights identical."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO

pytestmark = pytest.mark.slow


def write_config(tmp_path, khoa_root, name: str, **overrides) -> tuple:
    names = (khoa_root / "train.txt").read_text().split()
    vehicles = sorted({n.rsplit("_", 1)[0] for n in names})[:12]  # a slice: 12 vehicles x 2 views
    (tmp_path / "slice.txt").write_text("\n".join(n for n in names if n.rsplit("_", 1)[0] in vehicles))
    config = {
        "model": {"backbone": "efficientnet_lite0", "pretrained_backbone": True,
                  "level_names": ["type", "vehicle"], "hidden_size": 64, "input_size": 64},
        "train": [{"kind": "two-camera", "root": str(khoa_root),
                   "options": {"list_file": str(tmp_path / "slice.txt")}}],
        "epochs": 3, "batch_size": 8, "optimizer": "adamw", "lr": 2e-3, "schedule": "constant",
        "workers": 0, "erasing": 0.0, "output": str(tmp_path / name), **overrides,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, tmp_path / name


def run(config, *args, env=None, expect=0, launcher=(sys.executable, "-m", "rnnha.train")):
    proc = subprocess.run([*launcher, "--config", str(config), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def history(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_lowers_both_losses(tmp_path, khoa_root):
    from rnnha.train import TrainConfig, train

    config, out = write_config(tmp_path, khoa_root, "run", epochs=6)
    summary = train(TrainConfig.from_file(config))
    rows = history(out)
    assert len(rows) == 6 and summary["world_size"] == 1
    for level in ("type", "vehicle"):
        assert rows[-1][f"loss_{level}"] < 0.8 * rows[0][f"loss_{level}"], [r[f"loss_{level}"] for r in rows]
    assert (out / "last.safetensors").is_file() and (out / "summary.json").is_file()


def test_evaluate_cli_reads_a_checkpoint(tmp_path, khoa_root, capsys):
    from rnnha.evaluate import main
    from rnnha.train import TrainConfig, train

    config, out = write_config(tmp_path, khoa_root, "run", epochs=1)
    train(TrainConfig.from_file(config))
    capsys.readouterr()
    assert main(["--model", str(out / "last.safetensors"), "--dataset", "two-camera",
                 "--root", str(khoa_root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["list"] == "val.txt" and result["cam1->cam2"]["num_queries"] == 102
    assert 0 < result["mAP"] <= 100 and 0 < result["type_top1"] <= 100
    assert main(["--model", str(tmp_path / "nope.safetensors"), "--dataset", "two-camera",
                 "--root", str(khoa_root)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_resume_after_a_kill_mid_epoch_is_exact(tmp_path, khoa_root):
    config, straight = write_config(tmp_path, khoa_root, "straight")
    run(config)
    config2, killed = write_config(tmp_path, khoa_root, "killed")
    steps_per_epoch = 3  # 24 images / batch 8
    run(config2, env={"RNNHA_CRASH_AFTER_STEPS": str(steps_per_epoch + 2)}, expect=17)  # dies in epoch 2
    assert len(history(killed)) == 1  # epoch 1 was checkpointed, epoch 2 was not
    # what a kill during a checkpoint write leaves (rnnha.io.atomic_path's temporary), and two look-alikes
    import tempfile

    orphan = tempfile.mkstemp(prefix=".last.safetensors.", suffix=".tmp", dir=killed)[1]
    (killed / "notes.tmp").write_text("mine")
    (killed / ".keep").write_text("mine")
    proc = run(config2, "--resume")
    assert "resumed from" in proc.stdout and "at epoch 1" in proc.stdout
    assert "removed 1 temporary file(s)" in proc.stdout and not os.path.exists(orphan)
    assert (killed / "notes.tmp").is_file() and (killed / ".keep").is_file()
    a, b = load_file(str(straight / "last.safetensors")), load_file(str(killed / "last.safetensors"))
    model_keys = [k for k in a if k.startswith("model/")]
    assert model_keys and set(a) == set(b)
    for key in model_keys:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert [r["loss_vehicle"] for r in history(straight)] == pytest.approx(
        [r["loss_vehicle"] for r in history(killed)], rel=1e-5)


def test_torchrun_two_cpu_processes_keep_identical_weights(tmp_path, khoa_root):
    config, out = write_config(tmp_path, khoa_root, "ddp", epochs=2, batch_size=4)
    run(config, launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "rnnha.train"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    first, second = summary["weights_sha256_per_rank"]
    assert first == second
    fresh = json.loads((out / "summary.json").read_text())["history"][0]
    assert fresh["images_per_second"] > 0


def test_config_errors_are_clear(tmp_path, khoa_root):
    from rnnha.train import ConfigError, TrainConfig

    config, _ = write_config(tmp_path, khoa_root, "bad")
    with pytest.raises(ConfigError, match="unknown config keys \\['epoch'\\]"):
        TrainConfig.from_file(config, ["epoch=3"])
    with pytest.raises(ConfigError, match="not key=value"):
        TrainConfig.from_file(config, ["epochs"])
    assert TrainConfig.from_file(config, ["epochs=7", "model.hidden_size=32"]).model["hidden_size"] == 32
    # YAML 1.1 reads 6e-5 (no dot) as a string; the optimizer would fail far from the cause
    cfg = TrainConfig.from_file(config, ["lr=6e-5", "epochs=2", "max_steps_per_epoch=3"])
    assert (cfg.lr, cfg.epochs, cfg.max_steps_per_epoch) == (6e-5, 2, 3) and isinstance(cfg.lr, float)
    with pytest.raises(ConfigError, match="lr must be a number \\(float\\), got 'fast'"):
        TrainConfig.from_file(config, ["lr=fast"])
    with pytest.raises(ConfigError, match="epochs must be a number \\(int\\), got 2.5"):
        TrainConfig.from_file(config, ["epochs=2.5"])


def test_csv_protocol_never_matches_a_query_with_itself(tmp_path, khoa_root, monkeypatch):
    """Two views of 3 vehicles in a CSV without cameras, embedded so that each image's other view is
    its farthest neighbour: rank-1 is 0 unless the query wrongly matches itself."""
    import rnnha.evaluate as ev
    import rnnha.protocols
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.predictor import Predictor

    names = (khoa_root / "val.txt").read_text().split()[:6]
    files = {p.name: p for p in (khoa_root / "images").rglob("*.jpg")}
    (tmp_path / "val.csv").write_text("path,vehicle\n" + "".join(f"{files[n]},{n.rsplit('_', 1)[0]}\n" for n in names))
    basis = torch.eye(3)
    views = torch.stack([basis[i // 2] * (1 if i % 2 == 0 else -1) for i in range(6)])  # partner = -self
    assert [n.rsplit("_", 1)[0] for n in names[::2]] == [n.rsplit("_", 1)[0] for n in names[1::2]]
    monkeypatch.setattr(rnnha.protocols, "extract", lambda predictor, samples, flip=False: ev.Features(views, [torch.zeros(6, 10)]))
    model = RNNHA(RNNHAConfig(hidden_size=32, input_size=64))
    result = ev.evaluate(Predictor(model, device="cpu"), "csv", tmp_path / "val.csv")
    assert result["num_valid_queries"] == 6
    assert result["rank1"] == 0 and result["mAP"] == pytest.approx(100 / 5)  # the partner is last of 5


def test_zero_shot_model_is_the_imagenet_gap_feature(khoa_pair):
    from zoo import load_model

    predictor = load_model("imagenet:efficientnet_lite0", device="cpu")
    predictor.dtype = torch.float32
    batch = predictor.preprocess(list(khoa_pair))
    with torch.inference_mode():
        gap = predictor.model.backbone(batch).mean(dim=(2, 3))
    torch.testing.assert_close(predictor.embed(batch), torch.nn.functional.normalize(gap, dim=1),
                               rtol=1e-4, atol=1e-5)


def test_init_from_keeps_what_fits_and_refits_new_identities(tmp_path):
    """Fine-tuning from a model folder or a checkpoint: everything is copied except the classifier of a
    level whose classes changed; a different backbone is refused."""
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.checkpoint import save_checkpoint
    from rnnha.pretrained import save_pretrained
    from rnnha.train import initialise_from

    def make(vehicles, backbone="efficientnet_lite0"):
        torch.manual_seed(0 if vehicles[0] == "a" else 1)  # a different initialisation for new identities
        return RNNHA(RNNHAConfig(backbone=backbone, num_classes=[2, 3], level_names=["type", "vehicle"],
                                 class_names=[["car", "bus"], vehicles], hidden_size=16, neck=True))

    source = make(["a", "b", "c"])
    folder = save_pretrained(source, tmp_path / "folder")
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(tmp_path / "last.safetensors", source, optimizer, scheduler,
                    {"model_config": source.config.to_dict()})
    for where in (folder, tmp_path / "last.safetensors"):
        same = make(["a", "b", "c"])
        assert initialise_from(same, where) == []
        for name, tensor in same.state_dict().items():
            assert torch.equal(tensor, source.state_dict()[name]), name
        other = make(["x", "y", "zz"])  # new identities, same count: the vehicle level starts afresh
        fresh = initialise_from(other, where)
        assert fresh == sorted(n for n in other.state_dict() if n.startswith("head.classifiers.1."))
        assert torch.equal(other.state_dict()["head.classifiers.0.weight"], source.state_dict()["head.classifiers.0.weight"])
        assert not torch.equal(other.state_dict()["head.classifiers.1.weight"], source.state_dict()["head.classifiers.1.weight"])
    from rnnha.train import ConfigError

    with pytest.raises(ConfigError, match="resnet50"):
        initialise_from(make(["a", "b", "c"], backbone="resnet50"), folder)
    with pytest.raises(ConfigError, match="not a readable"):
        (tmp_path / "junk.safetensors").write_bytes(b"junk")
        initialise_from(make(["a", "b", "c"]), tmp_path / "junk.safetensors")


def test_init_from_moves_a_classifier_to_the_level_of_the_same_name():
    """Source levels [model, vehicle], recipe levels [vehicle] with the same vehicles: the source's
    second classifier is the recipe's first; the model classifier (same size, other classes) is not."""
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.train import Source, initialise_from

    torch.manual_seed(0)
    source = RNNHA(RNNHAConfig(head="bnneck", num_classes=[3, 3], level_names=["model", "vehicle"],
                               class_names=[["m1", "m2", "m3"], ["a", "b", "c"]]))
    target = RNNHA(RNNHAConfig(head="bnneck", num_classes=[3], level_names=["vehicle"],
                               class_names=[["a", "b", "c"]]))
    fresh = initialise_from(target, Source(source.state_dict(), source.config, "source"))
    assert not any(name.startswith("head.classifiers.") for name in fresh)
    assert torch.equal(target.state_dict()["head.classifiers.0.weight"], source.state_dict()["head.classifiers.1.weight"])


def test_init_from_a_two_level_model_into_three_levels():
    """[model, vehicle] -> [class, model, vehicle] (a vehicle-class level above the car model, as the
    default model gained): each level's neck, classifier rows (by class name) and the guidance into its
    step follow the level's name; the new level and the guidance into the car-model step start fresh."""
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.train import Source, initialise_from

    torch.manual_seed(0)
    source = RNNHA(RNNHAConfig(num_classes=[3, 2], level_names=["model", "vehicle"], hidden_size=16, neck=True,
                               class_names=[["Audi TT", "BMW M3", "truck"], ["a", "b"]], aux_classifier=True))
    torch.manual_seed(1)
    target = RNNHA(RNNHAConfig(num_classes=[2, 2, 2], level_names=["class", "model", "vehicle"], hidden_size=16,
                               neck=True, class_names=[["car", "truck"], ["BMW M3", "Audi TT"], ["a", "b"]],
                               aux_classifier="model"))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    fresh = initialise_from(target, Source(source.state_dict(), source.config, "source"))
    mine, theirs = target.state_dict(), source.state_dict()
    for ours, origin in (("head.necks.1.weight", "head.necks.0.weight"), ("head.necks.2.running_var", "head.necks.1.running_var"),
                         ("head.transformers.1.fc1.weight", "head.transformers.0.fc1.weight"),
                         ("head.classifiers.2.weight", "head.classifiers.1.weight"), ("head.gru.weight_hh", "head.gru.weight_hh")):
        assert torch.equal(mine[ours], theirs[origin]), ours
    swapped = theirs["head.classifiers.0.weight"][[1, 0]]  # ours: BMW M3, Audi TT
    assert torch.equal(mine["head.classifiers.1.weight"], swapped)
    assert torch.equal(mine["head.aux_classifier.weight"], theirs["head.aux_classifier.weight"][[1, 0]])
    for name in ("head.necks.0.weight", "head.classifiers.0.weight", "head.transformers.0.fc1.weight"):
        assert torch.equal(mine[name], before[name]) and name in fresh, name
    assert "head.classifiers.2.weight" not in fresh and "head.gru.weight_ih" not in fresh
    assert not any(n.startswith("backbone.") for n in fresh)


def test_init_from_keeps_identities_apart_and_skips_other_widths():
    """The identity level's rows are never copied by name (ids are a dataset's own: 'car_0003' of
    another dataset is another vehicle), coarse rows are; a classifier of another width is left fresh."""
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.train import Source, initialise_from

    def make(vehicles, hidden=16, seed=0):
        torch.manual_seed(seed)
        return RNNHA(RNNHAConfig(num_classes=[2, len(vehicles)], level_names=["type", "vehicle"], hidden_size=hidden,
                                 class_names=[["car", "bus"], vehicles], neck=True))

    source = make(["car_0001", "car_0002", "car_0003"])
    target = make(["car_0003", "car_0009"], seed=1)
    before = target.state_dict()["head.classifiers.1.weight"].clone()
    fresh = initialise_from(target, Source(source.state_dict(), source.config, "source"))
    assert torch.equal(target.state_dict()["head.classifiers.1.weight"], before) and "head.classifiers.1.weight" in fresh
    assert torch.equal(target.state_dict()["head.classifiers.0.weight"], source.state_dict()["head.classifiers.0.weight"])
    wider = make(["x"], hidden=32, seed=1)  # another hidden size: the head's tensors do not fit, the backbone does
    wide_before = wider.state_dict()["head.classifiers.0.weight"].clone()
    fresh = initialise_from(wider, Source(source.state_dict(), source.config, "source"))
    assert torch.equal(wider.state_dict()["head.classifiers.0.weight"], wide_before)
    assert "head.classifiers.0.weight" in fresh and not any(n.startswith("backbone.") for n in fresh)
