"""Same vehicle or not: a cosine-similarity threshold calibrated on validation pairs."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["pair_similarities", "calibrate_threshold"]


def pair_similarities(embeddings: torch.Tensor, vehicles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of every pair of distinct images, and whether the pair is one vehicle."""
    sim = (embeddings @ embeddings.T).float().cpu().numpy()
    i, j = np.triu_indices(len(vehicles), k=1)
    ids = np.asarray(vehicles)
    return sim[i, j], ids[i] == ids[j]


def calibrate_threshold(similarities: np.ndarray, same: np.ndarray) -> dict:
    """The threshold with the best balanced accuracy (mean of the true-positive and true-negative
    rates, so the many different-vehicle pairs do not swamp the few same-vehicle ones)."""
    similarities, same = np.asarray(similarities, dtype=np.float64), np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        raise ValueError("calibration needs both same-vehicle and different-vehicle pairs")
    order = np.argsort(-similarities, kind="stable")
    s, y = similarities[order], same[order]
    tp = np.cumsum(y)  # predicting "same" for the top k pairs
    tn = (~y).sum() - np.cumsum(~y)
    balanced = 0.5 * (tp / y.sum() + tn / (~y).sum())
    k = int(np.argmax(balanced))
    threshold = float((s[k] + s[k + 1]) / 2) if k + 1 < len(s) else float(s[k])
    return {"threshold": threshold, "balanced_accuracy": float(100 * balanced[k]),
            "true_positive_rate": float(100 * tp[k] / y.sum()),
            "true_negative_rate": float(100 * tn[k] / (~y).sum()),
            "positive_pairs": int(y.sum()), "negative_pairs": int((~y).sum())}
