"""Calibrated probabilities: a temperature per level, the expected calibration error, and the
probability that two images show the same vehicle.

* Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): a level's
  logits are divided by one scalar T > 0, fitted by minimising the negative log-likelihood on images
  the model never trained on. It changes no prediction (the arg-max is the same), only how sure the
  softmax says it is.
* ECE: the images are put in 15 equal-width bins of top-1 confidence; the ECE is the mean over bins,
  weighted by their share of images, of |accuracy - mean confidence| (in [0, 1]).
* Same vehicle: p(same | cosine s) = sigmoid(a s + b) (Platt scaling), fitted on the calibration pairs
  with the two kinds of pair weighted equally: the probability for a pair drawn from a 50/50 prior,
  which is 0.5 near the balanced-accuracy threshold of rnnha.verification rather than near 0 because
  almost every pair of a gallery is of different vehicles.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ECE_BINS", "TEMPERATURE_RANGE", "fit_temperature", "expected_calibration_error", "reliability", "fit_same_vehicle",
           "same_vehicle_probability", "similarity_histograms", "similarity_picture"]

ECE_BINS = 15


def _labelled(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits and int64 labels of the images that have a label (label >= 0)."""
    logits, labels = torch.as_tensor(logits).double(), torch.as_tensor(labels).long()
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"need N x C logits and N labels, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    keep = labels >= 0
    if not keep.any():
        raise ValueError("no labelled images to calibrate on")
    return logits[keep], labels[keep]


TEMPERATURE_RANGE = (0.05, 20.0)  # a fit outside is clipped: e.g. with no error to learn from, the NLL
# falls without end as T -> 0 and every prediction would read 100 %


def fit_temperature(logits, labels) -> float:
    """The T in TEMPERATURE_RANGE minimising the mean negative log-likelihood of softmax(logits / T)
    (labels < 0 are missing and skipped). Fitted over log T, so T stays positive, with L-BFGS."""
    logits, labels = _labelled(logits, labels)
    low, high = (math.log(v) for v in TEMPERATURE_RANGE)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = float(log_t.detach())
    return math.exp(min(max(fitted, low), high)) if math.isfinite(fitted) else 1.0


def reliability(probs, labels, bins: int = ECE_BINS) -> list[dict]:
    """Per bin of top-1 confidence (equal widths over [0, 1]): its range, count, accuracy and mean
    confidence; empty bins are left out."""
    probs, labels = _labelled(probs, labels)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(confidence, edges[1:-1], right=False)  # bin i holds (edge_i, edge_i+1]
    rows = []
    for i in range(bins):
        inside = which == i
        if inside.any():
            rows.append({"low": float(edges[i]), "high": float(edges[i + 1]), "count": int(inside.sum()),
                         "accuracy": float(correct[inside].mean()), "confidence": float(confidence[inside].mean())})
    return rows


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """ECE of softmax probabilities (N x C) against labels (labels < 0 skipped), in [0, 1]."""
    rows = reliability(probs, labels, bins)
    total = sum(r["count"] for r in rows)
    return sum(r["count"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows)


def fit_same_vehicle(similarities: Sequence[float], same: Sequence[bool]) -> dict:
    """Platt scaling of the cosine similarity, same- and different-vehicle pairs weighted equally:
    {"a", "b"} of p(same | s) = sigmoid(a s + b), and the similarity where p = 0.5."""
    s = torch.as_tensor(np.asarray(similarities, dtype=np.float64))
    y = torch.as_tensor(np.asarray(same, dtype=bool))
    if y.all() or not y.any():
        raise ValueError("fitting the same-vehicle probability needs same- and different-vehicle pairs")
    weight = torch.where(y, 0.5 / y.sum(), 0.5 / (~y).sum()).double()
    params = torch.tensor([10.0, -5.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], lr=0.5, max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(params[0] * s + params[1], y.double(), reduction="none")
                * weight).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    a, b = (float(v) for v in params.detach())
    return {"a": a, "b": b, "even_at": -b / a if a else math.nan, "weighting": "same and different pairs equally"}


def same_vehicle_probability(similarity: float, fit: dict) -> float:
    """p(same vehicle | cosine similarity) of a fit_same_vehicle fit."""
    z = fit["a"] * float(similarity) + fit["b"]
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def similarity_histograms(similarities: Sequence[float], same: Sequence[bool], bins: int = 48,
                          low: float = -0.2, high: float = 1.0) -> dict:
    """Counts of the same- and different-vehicle pairs' similarities over `bins` equal bins of [low,
    high] (values outside go to the end bins): what a model folder keeps of its calibration pairs, so
    that the app and the model card can draw them without the data."""
    s = np.clip(np.asarray(similarities, dtype=np.float64), low, high)
    y = np.asarray(same, dtype=bool)
    edges = np.linspace(low, high, bins + 1)
    return {"edges": [round(float(e), 6) for e in edges],
            "same": np.histogram(s[y], edges)[0].tolist(), "different": np.histogram(s[~y], edges)[0].tolist()}


def similarity_picture(histograms: dict, threshold: float, pair: float | None = None,
                       width: float = 5.0, height: float = 2.2, dpi: int = 100):
    """A small matplotlib figure (a PIL image) of similarity_histograms: the same- and
    different-vehicle distributions (each as a density), the threshold and, if given, one pair's
    similarity. Drawn off-screen (Agg) without pyplot's global state: safe in a server."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    edges = np.asarray(histograms["edges"], dtype=np.float64)
    figure = Figure(figsize=(width, height), dpi=dpi)
    axes = figure.add_subplot()
    for kind, colour, label in (("different", "#d62728", "different vehicles"), ("same", "#2ca02c", "same vehicle")):
        counts = np.asarray(histograms[kind], dtype=np.float64)
        density = counts / max(counts.sum(), 1) / np.diff(edges)
        axes.stairs(density, edges, fill=True, alpha=0.5, color=colour, label=f"{label} ({int(counts.sum()):,} pairs)")
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold {threshold:.2f}")
    if pair is not None:
        axes.axvline(min(max(pair, edges[0]), edges[-1]), color="#1f77b4", linewidth=2.2, label=f"this pair {pair:.2f}")
    axes.set_xlabel("cosine similarity")
    axes.set_yticks([])
    axes.set_xlim(edges[0], edges[-1])
    axes.legend(fontsize=7, frameon=False, loc="upper left")
    figure.tight_layout(pad=0.4)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
