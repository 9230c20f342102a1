"""Evaluate: `python -m rnnha.evaluate --model NAME_OR_DIR --dataset KIND --root DIR [--json]`.

Protocols (figures in percent):
- veri: query vs test, gallery items of the query's vehicle seen by the same camera are junk; mAP,
  CMC rank-1/5/10, mINP (torchreid / fast-reid), and VeRi's official MATLAB-style AP.
- two-camera: cam1 queries vs the cam2 gallery and the reverse, and their mean.
- vehicleid: test 800 / 1600 / 2400, one random gallery image per vehicle, 10 repeats: mean and std.
- stanford-cars, csv (and any dataset with coarse labels): top-1 / top-5 accuracy of the coarse level.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .data import DataError, Sample, load_dataset
from .images import load_image
from .metrics import reid_metrics, topk_accuracy, vehicleid_metrics, veri_matlab_metrics
from .predictor import Predictor

PROTOCOLS = {  # what each dataset kind's figures mean, for model cards and reports
    "two-camera": "two-camera folder, val.txt by default: cam1 queries vs the cam2 gallery and the reverse, "
                  "mean of both; cosine similarity; mAP (non-interpolated), CMC, mINP in percent",
    "veri": "VeRi-776 query vs test, same-vehicle same-camera gallery images removed as junk (torchreid / "
            "fast-reid protocol); veri_matlab_mAP is the official MATLAB-style AP",
    "vehicleid": "VehicleID test 800/1600/2400, one random gallery image per vehicle, 10 repeats (seeds 0-9)",
    "stanford-cars": "car-model top-1 / top-5 on the held-out 10 % of every Stanford Cars class (seed 0)",
    "csv": "every labelled image a query against all the others, itself and same-camera views removed",
}

__all__ = ["PROTOCOLS", "Features", "extract", "image_batches", "evaluate_samples", "evaluate_two_camera", "evaluate_veri",
           "evaluate_vehicleid", "evaluate_coarse", "main"]


@dataclass
class Features:
    embeddings: torch.Tensor  # N x D, unit norm
    logits: list[torch.Tensor]  # per level, N x n_t (float32)


class _Images(Dataset):
    def __init__(self, samples: Sequence[Sample], transform):
        self.samples, self.transform = list(samples), transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.transform(load_image(self.samples[i].path))


def image_batches(predictor: Predictor, samples: Sequence[Sample], workers: int = 2, desc: str = "extract",
                  progress: bool = True) -> Iterator[torch.Tensor]:
    """The samples' images, preprocessed for the predictor, in its batch size and in order (decoded by
    `workers` processes), with a progress bar on a terminal."""
    from tqdm import tqdm

    loader = DataLoader(_Images(samples, predictor.transform), batch_size=predictor.batch_size,
                        num_workers=workers, shuffle=False)
    yield from tqdm(loader, desc=desc, disable=None if progress else True, leave=False)


def extract(predictor: Predictor, samples: Sequence[Sample], flip: bool = False,
            workers: int = 2, desc: str = "extract") -> Features:
    """Embeddings and logits of every sample, batched, with progress; flip=True averages each image's
    embedding (then re-normalised) and logits with its mirror image's."""
    embeddings, logits = [], []
    for batch in image_batches(predictor, samples, workers, desc):
        out = predictor.forward(batch)
        embedding, level_logits = out.embedding.float(), [l.float() for l in out.logits]
        if flip:
            mirror = predictor.forward(batch.flip(3))
            embedding = torch.nn.functional.normalize(embedding + mirror.embedding.float(), dim=1)
            level_logits = [(l + m.float()) / 2 for l, m in zip(level_logits, mirror.logits)]
        embeddings.append(embedding.cpu())
        logits.append([l.cpu() for l in level_logits])
    return Features(torch.cat(embeddings), [torch.cat(level) for level in zip(*logits)])


def _ids(samples: Sequence[Sample]) -> list[str]:
    return [s.labels["vehicle"] for s in samples]


def _cameras(samples: Sequence[Sample]) -> list[str | None]:
    return [s.camera for s in samples]


def _reid(q: Features, g: Features, query: Sequence[Sample], gallery: Sequence[Sample],
          cameras: bool = True) -> dict:
    similarity = q.embeddings @ g.embeddings.T  # cosine: both sides are unit norm
    if not cameras:
        return reid_metrics(similarity, _ids(query), _ids(gallery))
    return reid_metrics(similarity, _ids(query), _ids(gallery), _cameras(query), _cameras(gallery))


def evaluate_two_camera(predictor: Predictor, samples: Sequence[Sample], flip: bool = False) -> dict:
    """cam A -> cam B and B -> A (for the two cameras present), and the mean of both directions."""
    cameras = sorted({s.camera for s in samples})
    if len(cameras) != 2:
        raise DataError(f"a two-camera evaluation needs exactly two cameras, found {cameras}")
    features = extract(predictor, samples, flip)
    index = {c: [i for i, s in enumerate(samples) if s.camera == c] for c in cameras}
    result = {}
    for a, b in ((cameras[0], cameras[1]), (cameras[1], cameras[0])):
        similarity = features.embeddings[index[a]] @ features.embeddings[index[b]].T
        result[f"cam{a}->cam{b}"] = reid_metrics(similarity, _ids([samples[i] for i in index[a]]),
                                                 _ids([samples[i] for i in index[b]]))
    directions = list(result)
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
        result[key] = sum(result[d][key] for d in directions) / 2
    result.update(_coarse_if_labelled(predictor, samples, features))
    return result


def evaluate_veri(predictor: Predictor, root: str | Path, flip: bool = False) -> dict:
    query, gallery = load_dataset("veri", root, split="query"), load_dataset("veri", root, split="test")
    q, g = extract(predictor, query, flip, desc="query"), extract(predictor, gallery, flip, desc="gallery")
    result = _reid(q, g, query, gallery)
    official = veri_matlab_metrics(q.embeddings @ g.embeddings.T, _ids(query), _ids(gallery),
                                   _cameras(query), _cameras(gallery))
    result["veri_matlab_mAP"] = official["mAP"]
    return result


def evaluate_vehicleid(predictor: Predictor, root: str | Path, sizes: Sequence[int] = (800, 1600, 2400),
                       repeats: int = 10, seed: int = 0, flip: bool = False,
                       skip_missing: bool = False) -> dict:
    result = {}
    for size in sizes:
        samples = load_dataset("vehicleid", root, split=f"test{size}", skip_missing=skip_missing)
        features = extract(predictor, samples, flip, desc=f"test{size}")
        result[f"test{size}"] = vehicleid_metrics(features.embeddings, _ids(samples), repeats=repeats, seed=seed)
    return result


def _level_index(predictor: Predictor, level: str | None) -> int:
    names = predictor.level_names
    if level is None:
        return 0
    if level not in names:
        raise DataError(f"the model has no level {level!r}; its levels are {names}")
    return names.index(level)


def evaluate_coarse(predictor: Predictor, samples: Sequence[Sample], level: str | None = None,
                    features: Features | None = None, flip: bool = False) -> dict:
    """Top-1 / top-5 accuracy of a coarse level, matching label names (not indices) to the model's."""
    features = features or extract(predictor, samples, flip)
    t = _level_index(predictor, level)
    name = predictor.level_names[t]
    index = {n: i for i, n in enumerate(predictor.class_names(t))}
    targets = torch.tensor([index.get(s.labels.get(name), -100) for s in samples])
    labelled = int((targets != -100).sum())
    if not labelled:
        raise DataError(f"none of the {len(samples)} images has a {name!r} label the model knows")
    result = topk_accuracy(features.logits[t], targets)
    result.update(level=name, num_images=labelled, num_unknown_labels=sum(
        1 for s in samples if name in s.labels and s.labels[name] not in index))
    return result


def _coarse_if_labelled(predictor, samples, features) -> dict:
    """Top-1/5 of the first coarse level whose labels the samples carry (e.g. type on two-camera)."""
    for t, level in enumerate(predictor.level_names[:-1]):
        known = set(predictor.class_names(t))
        if any(s.labels.get(level) in known for s in samples):
            accuracy = evaluate_coarse(predictor, samples, level, features)
            return {f"{level}_top1": accuracy["top1"], f"{level}_top5": accuracy["top5"]}
    return {}


def evaluate_samples(predictor: Predictor, kind: str, samples: Sequence[Sample], flip: bool = False,
                     level: str | None = None) -> dict:
    """The protocol of `kind` on samples already loaded (used for validation during training)."""
    if kind == "two-camera":
        return evaluate_two_camera(predictor, samples, flip)
    if kind in ("stanford-cars", "csv") and not any("vehicle" in s.labels for s in samples):
        return evaluate_coarse(predictor, samples, level or ("model" if "model" in predictor.level_names
                                                             else None), flip=flip)
    if kind == "csv":  # every image is a query against all the others
        samples = [s for s in samples if "vehicle" in s.labels]
        features = extract(predictor, samples, flip)
        # junk: the query itself, and its vehicle's images from the same camera (a missing camera is
        # the image's own, so that only the query itself is removed)
        cams = [s.camera if s.camera is not None else f"image{i}" for i, s in enumerate(samples)]
        similarity = features.embeddings @ features.embeddings.T
        return {**reid_metrics(similarity, _ids(samples), _ids(samples), cams, cams),
                **_coarse_if_labelled(predictor, samples, features)}
    raise DataError(f"no sample-level protocol for {kind!r}; use evaluate_veri / evaluate_vehicleid")


def evaluate(predictor: Predictor, kind: str, root: str | Path, flip: bool = False,
             list_file: str | None = None, level: str | None = None, subset: str | None = None) -> dict:
    root = Path(root)
    if kind == "veri":
        return evaluate_veri(predictor, root, flip)
    if kind == "vehicleid":
        return evaluate_vehicleid(predictor, root, flip=flip)
    if kind == "two-camera":
        if list_file is None and (root / "val.txt").is_file():
            list_file = "val.txt"  # the validation vehicles: never trained on
        result = evaluate_two_camera(predictor, load_dataset(kind, root, list_file=list_file), flip)
        return {"list": list_file, **result}
    if kind == "stanford-cars":
        subset = subset or "holdout"
        samples = load_dataset(kind, root, subset=subset)
        return {"subset": subset, **evaluate_coarse(predictor, samples, level or "model", flip=flip)}
    if kind == "csv":
        return evaluate_samples(predictor, kind, load_dataset(kind, root), flip, level)
    raise DataError(f"unknown dataset kind {kind!r}")


def load_predictor(name_or_path: str, device=None) -> Predictor:
    """A zoo name, an exported folder or Hub id (via the zoo), a training checkpoint file, or
    `imagenet:BACKBONE`: the zero-shot baseline, the backbone's ImageNet GAP feature (no training)."""
    if name_or_path.startswith("imagenet:"):
        from .model import RNNHA, RNNHAConfig

        config = RNNHAConfig(backbone=name_or_path.split(":", 1)[1], head="bnneck", num_classes=[1],
                             level_names=["vehicle"], pretrained_backbone=True)
        return Predictor(RNNHA(config), device=device)
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        from .checkpoint import model_state, read_checkpoint
        from .model import RNNHA, RNNHAConfig

        tensors, record = read_checkpoint(path)
        model = RNNHA(RNNHAConfig.from_dict(record["model_config"]))
        model.load_state_dict(model_state(tensors), strict=True)
        return Predictor(model, device=device)
    from zoo import load_model  # outer ring, imported only here in the CLI path

    return load_model(name_or_path, device=device)


def _format(result: dict, indent: str = "") -> str:
    lines = []
    for key, value in result.items():
        if isinstance(value, dict):
            lines += [f"{indent}{key}:", _format(value, indent + "  ")]
        else:
            lines.append(f"{indent}{key:>20}: {value:.2f}" if isinstance(value, float) else f"{indent}{key:>20}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnha.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="zoo name, exported folder, hf-hub:ORG/NAME, checkpoint, or imagenet:BACKBONE (zero-shot)")
    parser.add_argument("--dataset", required=True, choices=["veri", "vehicleid", "two-camera", "stanford-cars", "csv"])
    parser.add_argument("--root", required=True, help="dataset folder (csv: the CSV file)")
    parser.add_argument("--list", dest="list_file", help="two-camera: list file of names (default val.txt if present)")
    parser.add_argument("--subset", choices=["all", "train", "holdout"], help="stanford-cars part (default holdout)")
    parser.add_argument("--level", help="coarse level to score (default: the model's)")
    parser.add_argument("--flip", action="store_true", help="average each embedding and logit with its mirror image's")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: best available)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        predictor = load_predictor(args.model, device=args.device)
        result = evaluate(predictor, args.dataset, args.root, args.flip, args.list_file, args.level, args.subset)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {"model": args.model, "dataset": args.dataset, **result}
    print(json.dumps(result, indent=None) if args.json else _format(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
