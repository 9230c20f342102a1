"""Linear probe: how well a model's backbone features alone separate a coarse level (car models).

The frozen backbone's GAP(f), standardised, feeds a multinomial logistic regression (L-BFGS, L2) fitted on
the Stanford Cars train part and scored on the held-out part. Against the model's own coarse classifier
this tells a head that generalises badly apart from backbone features that lack the information.

    python -m rnnha.probe --model runs/default/last.safetensors --root ../shared/data/stanford-cars
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import torch
import torch.nn.functional as F

from .data import DataError, Sample, load_dataset
from .protocols import image_batches
from .predictor import Predictor

__all__ = ["backbone_features", "fit_linear_probe", "linear_probe", "main"]


def backbone_features(predictor: Predictor, samples: Sequence[Sample], progress: bool = True) -> torch.Tensor:
    """N x d float32 GAP(f) of the backbone (Predictor.backbone_features), batched as evaluation does."""
    parts = [predictor.backbone_features(batch)
             for batch in image_batches(predictor, samples, desc="features", progress=progress)]
    return torch.cat(parts) if parts else predictor.backbone_features([])


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-4,
                     max_iter: int = 300):
    """Standardise x, fit softmax regression with an L2 penalty; returns predict(x) -> N x C logits."""
    mean, std = x.mean(dim=0), x.std(dim=0) + 1e-5
    z = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(z @ weight + bias, y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()
    return lambda new: ((new - mean) / std) @ weight + bias


def linear_probe(predictor: Predictor, train: Sequence[Sample], test: Sequence[Sample], level: str = "model",
                 weight_decay: float = 1e-4, progress: bool = True) -> dict:
    """Top-1 (%) on `test` of a linear classifier of `level` fitted on `train`'s frozen backbone features."""
    train = [s for s in train if level in s.labels]
    if not train:
        raise DataError(f"no training image carries a {level!r} label")
    names = sorted({s.labels[level] for s in train})
    index = {name: i for i, name in enumerate(names)}
    known = [s for s in test if s.labels.get(level) in index]
    if not known:
        raise DataError(f"no test image carries a {level!r} label seen in training")
    y_train = torch.tensor([index[s.labels[level]] for s in train])
    y_test = torch.tensor([index[s.labels[level]] for s in known])
    x_train = backbone_features(predictor, train, progress)
    predict = fit_linear_probe(x_train, y_train, len(names), weight_decay)
    train_top1 = (predict(x_train).argmax(1) == y_train).float().mean()
    test_top1 = (predict(backbone_features(predictor, known, progress)).argmax(1) == y_test).float().mean()
    return {"level": level, "top1": 100 * float(test_top1), "train_top1": 100 * float(train_top1),
            "num_train": len(train), "num_test": len(known), "num_unknown_labels": len(test) - len(known),
            "weight_decay": weight_decay}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnha.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="zoo name, exported folder, checkpoint, or imagenet:BACKBONE")
    parser.add_argument("--root", required=True, help="the Stanford Cars folder (labels.csv)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="L2 penalty of the probe (default 1e-4)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: best available)")
    args = parser.parse_args(argv)
    try:
        from zoo import load_model  # the command line resolves model names through the catalogue

        predictor = load_model(args.model, device=args.device)
        train = load_dataset("stanford-cars", args.root, subset="train")
        test = load_dataset("stanford-cars", args.root, subset="holdout")
        result = linear_probe(predictor, train, test, "model", args.weight_decay)
    except (ValueError, OSError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model": args.model, "dataset": "stanford-cars", "train": "train", "test": "holdout", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
