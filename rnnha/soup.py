"""Model soup: `python -m rnnha.soup OUT.safetensors CHECKPOINT CHECKPOINT [...]`.

The uniform average of the weights of training checkpoints fine-tuned from the same starting weights
(Wortsman et al., "Model soups", ICML 2022): fine-tuned from one start, their weights lie in one basin,
and the average is often better than each of them, at no cost in size or speed. The checkpoints must
share the architecture and the classes (the same `model_config`); BatchNorm running statistics are
averaged like the weights. The result is a training checkpoint with the model's tensors alone (no
optimizer state: it exports and evaluates, but does not resume), whose record names its ingredients;
`rnnha.export` turns it into a model folder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError, model_state, read_checkpoint
from .io import atomic_save_safetensors

__all__ = ["average_checkpoints", "main"]


def average_checkpoints(paths: list[str | Path], out: str | Path) -> dict:
    """Write the uniform soup of `paths` to `out`; returns its trainer record."""
    if len(paths) < 2:
        raise CheckpointError("a soup needs at least two checkpoints")
    tensors, first = read_checkpoint(paths[0])
    state = model_state(tensors)
    total = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}  # counters: the first's
    for path in paths[1:]:
        tensors, record = read_checkpoint(path)
        other = model_state(tensors)
        if record["model_config"] != first["model_config"] or sorted(other) != sorted(state):
            raise CheckpointError(f"{path} is not the same model as {paths[0]} (architecture or classes differ): "
                                  "a soup averages fine-tuned copies of one model")
        for k, v in other.items():
            if v.shape != total[k].shape:
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, {tuple(total[k].shape)} in {paths[0]}")
            if v.is_floating_point():
                total[k] += v.double()
    soup = {f"model/{k}": (v / len(paths)).to(state[k].dtype) if v.is_floating_point() else v
            for k, v in total.items()}
    # the record of the first ingredient, less what belongs to its run alone (optimizer, RNG, validation)
    record = {k: v for k, v in first.items() if k not in ("optimizer", "scheduler", "rng", "history")}
    record["soup"] = [str(p) for p in paths]
    atomic_save_safetensors(soup, out, metadata={"format": "rnnha-checkpoint", "trainer": json.dumps(record)})
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnha.soup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the checkpoint to write (.safetensors)")
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="training checkpoints of one model")
    args = parser.parse_args(argv)
    try:
        average_checkpoints(args.checkpoints, args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: the average of {len(args.checkpoints)} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
