"""The building blocks of evaluation protocols: features of a list of samples, re-id scored between a
query set and a gallery set, and coarse-level accuracy. Each dataset kind (rnnha/data/) composes them
into its own protocol; validation during training and `python -m rnnha.evaluate` both run that.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DataError
from .images import load_image
from .calibration import expected_calibration_error
from .metrics import reid_metrics, topk_accuracy
from .rerank import check_method, rerank_similarity

if TYPE_CHECKING:  # types only: the data layer imports this module
    from .data.base import Sample
    from .predictor import Predictor

__all__ = ["ProtocolError", "Features", "extract", "image_batches", "similarity_between", "reid_between",
           "coarse_accuracy", "coarse_if_labelled", "vehicle_ids", "cameras"]


class ProtocolError(DataError):
    """Samples that a protocol cannot score (no cameras, no labels the model knows ...)."""


@dataclass
class Features:
    embeddings: torch.Tensor  # N x D, unit norm
    logits: list[torch.Tensor]  # per level, N x n_t (float32)


class _Images(Dataset):
    def __init__(self, samples: Sequence["Sample"], transform):
        self.samples, self.transform = list(samples), transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.transform(load_image(self.samples[i].path))


def image_batches(predictor: "Predictor", samples: Sequence["Sample"], workers: int = 2,
                  desc: str = "extract", progress: bool = True) -> Iterator[torch.Tensor]:
    """The samples' images, preprocessed for the predictor, in its batch size and in order (decoded by
    `workers` processes), with a progress bar on a terminal."""
    from tqdm import tqdm

    loader = DataLoader(_Images(samples, predictor.transform), batch_size=predictor.batch_size,
                        num_workers=workers, shuffle=False)
    yield from tqdm(loader, desc=desc, disable=None if progress else True, leave=False)


def extract(predictor: "Predictor", samples: Sequence["Sample"], flip: bool = False,
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


def vehicle_ids(samples: Sequence["Sample"]) -> list[str]:
    missing = sum("vehicle" not in s.labels for s in samples)
    if missing:
        raise ProtocolError(f"{missing} of {len(samples)} images have no vehicle label; re-id needs one on each")
    return [s.labels["vehicle"] for s in samples]


def cameras(samples: Sequence["Sample"]) -> list[str | None]:
    return [s.camera for s in samples]


def similarity_between(query: torch.Tensor, gallery: torch.Tensor,
                       rerank: str | None = None) -> tuple[torch.Tensor, dict]:
    """Q x G scores of unit-norm embeddings, higher = more similar: the cosine similarity, or with
    `rerank` ("k-reciprocal" or "aqe", rnnha.rerank) the scores of that re-ranking. Also what ran, for
    the result: {} without re-ranking, else {"rerank": its name, "rerank_seconds": the time it took}.
    Pass the same tensor twice when the queries are the gallery (every image against all)."""
    if check_method(rerank) is None:
        return query @ gallery.T, {}
    start = time.perf_counter()
    similarity = rerank_similarity(query, gallery, rerank)  # the names are checked above
    return similarity, {"rerank": rerank, "rerank_seconds": round(time.perf_counter() - start, 3)}


def reid_between(query: Features, gallery: Features, query_samples: Sequence["Sample"],
                 gallery_samples: Sequence["Sample"], use_cameras: bool = True, rerank: str | None = None) -> dict:
    """mAP, CMC and mINP of every query against the gallery (cosine similarity; both sides unit norm).
    With cameras, the gallery images of the query's vehicle from the query's camera are junk. With
    `rerank`, the ranking is re-ranked first, and the result says which and how long it took."""
    similarity, ran = similarity_between(query.embeddings, gallery.embeddings, rerank)
    ids = vehicle_ids(query_samples), vehicle_ids(gallery_samples)
    cams = (cameras(query_samples), cameras(gallery_samples)) if use_cameras else ()
    return {**reid_metrics(similarity, *ids, *cams), **ran}


def _level_index(predictor: "Predictor", level: str | None) -> int:
    names = predictor.level_names
    if level is None:
        return 0
    if level not in names:
        raise ProtocolError(f"the model has no level {level!r}; its levels are {names}")
    return names.index(level)


def coarse_accuracy(predictor: "Predictor", samples: Sequence["Sample"], level: str | None = None,
                    features: Features | None = None, flip: bool = False) -> dict:
    """Top-1 / top-5 accuracy of a coarse level, matching label names (not indices) to the model's."""
    features = features or extract(predictor, samples, flip)
    t = _level_index(predictor, level)
    name = predictor.level_names[t]
    index = {n: i for i, n in enumerate(predictor.class_names(t))}
    targets = torch.tensor([index.get(s.labels.get(name), -100) for s in samples])
    labelled = int((targets != -100).sum())
    if not labelled:
        raise ProtocolError(f"none of the {len(samples)} images has a {name!r} label the model knows")
    result = topk_accuracy(features.logits[t], targets)
    result.update(level=name, num_images=labelled, num_unknown_labels=sum(
        1 for s in samples if name in s.labels and s.labels[name] not in index))
    # expected calibration error (15 bins) of the probabilities as the predictor gives them (with the
    # model folder's temperature, if any), and of the plain softmax
    logits = features.logits[t].float()
    result["ece"] = round(expected_calibration_error(predictor.probabilities(logits, t), targets), 4)
    result["ece_uncalibrated"] = round(expected_calibration_error(logits.softmax(dim=1), targets), 4)
    result["temperature"] = predictor.temperature(t)
    return result


def coarse_if_labelled(predictor: "Predictor", samples: Sequence["Sample"], features: Features) -> dict:
    """Top-1/5 of the first coarse level whose labels the samples carry (e.g. type on two-camera)."""
    for t, level in enumerate(predictor.level_names[:-1]):
        known = set(predictor.class_names(t))
        if any(s.labels.get(level) in known for s in samples):
            accuracy = coarse_accuracy(predictor, samples, level, features)
            return {f"{level}_{key}": accuracy[key] for key in ("top1", "top5", "ece", "ece_uncalibrated")}
    return {}
