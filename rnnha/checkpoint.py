"""Training checkpoints in one safetensors file (no pickle): model and optimizer tensors, RNG states,
and a JSON `trainer` record (epoch, scheduler, configs, labels) in the file's metadata. Written
atomically, so a run killed while saving leaves the previous checkpoint intact."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from .io import atomic_save_safetensors

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "model_state", "model_from_checkpoint",
           "CheckpointError", "weights_sha256"]


class CheckpointError(ValueError):
    pass


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict (names and bytes, any dtype)."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _optimizer_to_flat(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim/{index}/{name}"] = value.detach().cpu()
            else:
                scalars[f"{index}/{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer, scheduler, trainer: dict) -> None:
    tensors = {f"model/{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    optim_tensors, optim_meta = _optimizer_to_flat(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    tensors.update(optim_tensors)
    tensors.update(rng_tensors)
    record = {**trainer, "optimizer": optim_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta}
    atomic_save_safetensors(tensors, path, metadata={"format": "rnnha-checkpoint",
                                                     "trainer": json.dumps(record)})


def read_checkpoint(path: str | Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, trainer record) of a checkpoint file, or a CheckpointError saying what is wrong;
    tensors=False reads the record alone (no tensor is read: {} in their place)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            found = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc})") from exc
    if metadata.get("format") != "rnnha-checkpoint":
        raise CheckpointError(f"{path} is not an RNN-HA training checkpoint (no 'rnnha-checkpoint' metadata)")
    return found, json.loads(metadata["trainer"])


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}


def model_from_checkpoint(path: str | Path):
    """The model of a training checkpoint (its architecture from the record, its weights strictly)."""
    from .model import RNNHA, RNNHAConfig

    tensors, record = read_checkpoint(path)
    model = RNNHA(RNNHAConfig.from_dict(record["model_config"]))
    model.load_state_dict(model_state(tensors), strict=True)
    return model.eval()


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None, scheduler=None,
                    restore_rng: bool = True) -> dict:
    """Restore model (strictly), optimizer, scheduler and RNG; returns the trainer record."""
    tensors, record = read_checkpoint(path)
    model.load_state_dict(model_state(tensors), strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_from_flat(tensors, record["optimizer"]))
    if scheduler is not None:
        scheduler.load_state_dict(record["scheduler"])
    if restore_rng:
        set_rng_state(tensors, record["rng"])
    return record
