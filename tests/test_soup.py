"""rnnha.soup: the uniform average of fine-tuned checkpoints of one model, as a checkpoint that exports."""
import subprocess
import sys

import pytest
import torch

from rnnha import RNNHA, RNNHAConfig
from rnnha.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint, save_checkpoint
from rnnha.soup import average_checkpoints

CONFIG = dict(num_classes=[3, 4], level_names=["type", "vehicle"], hidden_size=16, input_size=64, neck=True)


def _checkpoint(path, seed, **config):
    torch.manual_seed(seed)
    model = RNNHA(RNNHAConfig(**{**CONFIG, **config}))
    with torch.no_grad():  # running statistics that differ between the ingredients, as after training
        model.head.necks[0].running_mean.uniform_(-1, 1)
        model.head.necks[0].num_batches_tracked.fill_(seed + 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(path, model, optimizer, scheduler,
                    {"model_config": model.config.to_dict(), "config": {"train": []}, "epoch": 2,
                     "history": [{"epoch": 2, "val": {"mAP": 90.0}}]})
    return model


def test_soup_is_the_mean_of_its_ingredients_and_exports(tmp_path):
    a = _checkpoint(tmp_path / "a.safetensors", 0)
    b = _checkpoint(tmp_path / "b.safetensors", 1)
    c = _checkpoint(tmp_path / "c.safetensors", 2)
    out = tmp_path / "soup.safetensors"
    record = average_checkpoints([tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"], out)
    soup = model_from_checkpoint(out).state_dict()
    for name, value in soup.items():
        parts = [m.state_dict()[name] for m in (a, b, c)]
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(parts) / 3, rtol=1e-6, atol=1e-7)
            assert value.dtype == parts[0].dtype
        else:  # counters are the first ingredient's
            assert torch.equal(value, parts[0])
    assert not torch.equal(soup["head.gru.weight_ih"], a.state_dict()["head.gru.weight_ih"])
    # a record of its own: the ingredients named, none of their optimizer state or validation
    tensors, saved = read_checkpoint(out)
    assert saved == record and saved["soup"] == [str(tmp_path / n) for n in ("a.safetensors", "b.safetensors", "c.safetensors")]
    assert "history" not in saved and "optimizer" not in saved and not any(k.startswith("optim/") for k in tensors)

    from rnnha.export import export_checkpoint

    folder = export_checkpoint(out, tmp_path / "folder", dtype=torch.float16)
    loaded = RNNHA.from_pretrained(folder)
    assert "average of 3 checkpoints" in (folder / "README.md").read_text()
    torch.testing.assert_close(loaded.state_dict()["head.gru.weight_ih"].float(),
                               soup["head.gru.weight_ih"].half().float())


def test_soup_refuses_different_models_and_a_single_checkpoint(tmp_path):
    _checkpoint(tmp_path / "a.safetensors", 0)
    _checkpoint(tmp_path / "wider.safetensors", 0, hidden_size=32)
    with pytest.raises(CheckpointError, match="not the same model"):
        average_checkpoints([tmp_path / "a.safetensors", tmp_path / "wider.safetensors"], tmp_path / "soup.safetensors")
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints([tmp_path / "a.safetensors"], tmp_path / "soup.safetensors")
    assert not (tmp_path / "soup.safetensors").exists()
    # the command line: one line saying what is wrong, exit status 2
    done = subprocess.run([sys.executable, "-m", "rnnha.soup", str(tmp_path / "soup.safetensors"),
                           str(tmp_path / "a.safetensors"), str(tmp_path / "missing.safetensors")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: no checkpoint at")
    assert "Traceback" not in done.stderr
