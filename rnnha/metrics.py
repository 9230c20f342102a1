"""Re-identification and classification metrics: pure functions on similarity matrices and labels.

Inputs may be NumPy arrays or torch tensors (any device, any dtype including bf16); everything is
converted to NumPy (float64 for floating point) and computed there. Nothing here touches a model or
the file system.

Protocols
---------
* `reid_metrics` -- the torchreid / fast-reid image re-ID protocol (Market-1501, VeRi-776, ...).
  For every query the gallery is ranked by descending similarity (ties broken by gallery index, i.e.
  a stable sort of ``-similarity``). When cameras are given, gallery items with the *same id and the
  same camera* as the query are junk and removed from the ranking; same id / other camera is a true
  match, other id (any camera) a negative. Queries without a true match left are skipped. Over the
  remaining ("valid") queries it averages
    - AP, non-interpolated:  AP = (1/R) * sum_i i / n_i        (R matches, i-th at 1-based rank n_i),
    - CMC rank-k:            1 if n_1 <= k else 0,
    - mINP (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook",
      TPAMI 2021):           INP = R / n_R                     (n_R = rank of the hardest match).
  Ranks n_i count only non-junk gallery items. All scores are reported in percent.
* `veri_matlab_metrics` -- identical ranking, junk and CMC, but AP as in the official MATLAB
  evaluation shipped with VeRi-776 (``compute_AP.m`` of the Market-1501 devkit), a trapezoidal
  interpolation of the precision/recall curve walked over every non-junk rank:
      ap += (recall_n - recall_{n-1}) * (precision_{n-1} + precision_n) / 2,  precision_0 = 1.
  Only ranks holding a match move the recall, so per match i at rank n_i this is
      AP = (1/R) * sum_i ((i-1)/(n_i-1) + i/n_i) / 2,  with (i-1)/(n_i-1) := 1 when n_i = 1.
* `vehicleid_splits` / `vehicleid_metrics` -- the VehicleID protocol (Liu et al., CVPR 2016): per
  repeat, one random image of every vehicle forms the gallery and all its other images are queries;
  no cameras, so nothing is junk. Results are mean and (population) std over the repeats.
* `topk_accuracy` -- top-k classification accuracy, skipping entries labelled ``ignore_index``.
"""
from __future__ import annotations

import sys
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

__all__ = ["reid_metrics", "veri_matlab_metrics", "topk_accuracy", "vehicleid_splits", "vehicleid_metrics"]

_CMC_KS = (1, 5, 10)
_BLOCK = 256  # queries per block: bounds the (block x G) temporaries


def _to_numpy(x: Any) -> np.ndarray:
    """NumPy view of an array-like; torch tensors are detached and moved to CPU, floats become float64."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach()
        if x.is_floating_point():
            x = x.to(dtype=torch.float64)  # bf16/fp16 have no NumPy twin
        return x.cpu().numpy()
    x = np.asarray(x)
    return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x


def _vector(x: Any, name: str, length: int, length_name: str) -> np.ndarray:
    v = _to_numpy(x)
    if v.ndim != 1 or len(v) != length:
        raise ValueError(f"{name} must be 1-D of length {length} ({length_name}), got shape {v.shape}")
    return v


class _QueryStats(NamedTuple):
    """Per-query quantities after junk removal (ranks are 1-based among non-junk items)."""

    num_matches: np.ndarray  # R
    first_rank: np.ndarray  # n_1 (0 when R = 0)
    last_rank: np.ndarray  # n_R (0 when R = 0)
    ap: np.ndarray  # non-interpolated AP (0 when R = 0)
    ap_veri: np.ndarray  # MATLAB trapezoidal AP (0 when R = 0)


def _ranked_matches(
    similarity: np.ndarray,
    query_ids: np.ndarray,
    gallery_ids: np.ndarray,
    query_cams: np.ndarray | None,
    gallery_cams: np.ndarray | None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield, per block of queries, (match, rank) arrays of shape (block, G) in ranked order.

    match[q, j] is True when the j-th ranked gallery item is a non-junk true match of query q;
    rank[q, j] is its 1-based rank after junk removal (only meaningful where match is True).
    """
    order = np.argsort(-similarity, axis=1, kind="stable")  # one sort for the whole matrix
    for start in range(0, len(order), _BLOCK):
        o = order[start : start + _BLOCK]
        same_id = gallery_ids[o] == query_ids[start : start + _BLOCK, None]
        if query_cams is None:
            keep = np.ones_like(same_id)
        else:  # junk: same id seen by the same camera
            keep = ~(same_id & (gallery_cams[o] == query_cams[start : start + _BLOCK, None]))
        yield same_id & keep, np.cumsum(keep, axis=1)


def _query_stats(
    similarity: Any,
    query_ids: Any,
    gallery_ids: Any,
    query_cams: Any | None,
    gallery_cams: Any | None,
) -> _QueryStats:
    sim = _to_numpy(similarity)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a 2-D (num_queries x num_gallery) matrix, got shape {sim.shape}")
    if not np.issubdtype(sim.dtype, np.number) or np.issubdtype(sim.dtype, np.complexfloating):
        raise ValueError(f"similarity must be real-valued, got dtype {sim.dtype}")
    if np.isnan(sim).any():
        raise ValueError("similarity contains NaN")
    nq, ng = sim.shape
    if nq == 0 or ng == 0:
        raise ValueError(f"similarity is empty (shape {sim.shape}): need at least one query and one gallery item")
    qids = _vector(query_ids, "query_ids", nq, "similarity rows")
    gids = _vector(gallery_ids, "gallery_ids", ng, "similarity columns")
    if (query_cams is None) != (gallery_cams is None):
        raise ValueError("query_cams and gallery_cams must be given together (or both None)")
    qcams = gcams = None
    if query_cams is not None:
        qcams = _vector(query_cams, "query_cams", nq, "similarity rows")
        gcams = _vector(gallery_cams, "gallery_cams", ng, "similarity columns")

    parts = []
    for match, rank in _ranked_matches(sim, qids, gids, qcams, gcams):
        hit_no = np.cumsum(match, axis=1)  # i: index of the match among matches, 1-based
        num = hit_no[:, -1]
        any_hit = num > 0
        first = np.where(any_hit, np.take_along_axis(rank, match.argmax(1)[:, None], 1)[:, 0], 0)
        last_col = ng - 1 - match[:, ::-1].argmax(1)
        last = np.where(any_hit, np.take_along_axis(rank, last_col[:, None], 1)[:, 0], 0)
        precision = hit_no / np.maximum(rank, 1)  # i / n_i at the matches (rank 0 only before any kept item)
        # precision one rank earlier: (i-1)/(n_i-1), defined as 1 at rank 1 (compute_AP.m's old_precision)
        prev_precision = np.where(rank > 1, (hit_no - 1) / np.maximum(rank - 1, 1), 1.0)
        denom = np.maximum(num, 1)
        ap = np.where(match, precision, 0.0).sum(1) / denom
        ap_veri = np.where(match, (prev_precision + precision) / 2, 0.0).sum(1) / denom
        parts.append((num, first, last, ap, ap_veri))
    return _QueryStats(*(np.concatenate(p) for p in zip(*parts)))


def _summarise(stats: _QueryStats, ap: np.ndarray, max_rank: int) -> dict:
    valid = stats.num_matches > 0
    if not valid.any():
        raise ValueError(
            f"no valid queries: none of the {len(valid)} queries has a true match in the gallery "
            "(after removing same-id same-camera junk)"
        )
    first = stats.first_rank[valid]
    # CMC at rank k: fraction of valid queries whose first match is within the top k (beyond G: flat)
    cmc = [100.0 * float(np.mean(first <= k)) for k in range(1, max(max_rank, max(_CMC_KS)) + 1)]
    return {
        "mAP": 100.0 * float(ap[valid].mean()),
        **{f"rank{k}": cmc[k - 1] for k in _CMC_KS},
        "mINP": 100.0 * float(np.mean(stats.num_matches[valid] / stats.last_rank[valid])),
        "cmc": cmc[:max_rank],
        "num_valid_queries": int(valid.sum()),
        "num_queries": int(len(valid)),
    }


def reid_metrics(
    similarity: Any,
    query_ids: Any,
    gallery_ids: Any,
    query_cams: Any | None = None,
    gallery_cams: Any | None = None,
    max_rank: int = 10,
) -> dict:
    """torchreid / fast-reid re-ID metrics from a (Q x G) similarity matrix (higher = more similar).

    Returns ``mAP``, ``rank1``, ``rank5``, ``rank10``, ``mINP`` (percent, over valid queries),
    ``cmc`` (list: CMC at ranks 1..max_rank, percent), ``num_valid_queries`` and ``num_queries``.
    Same-id same-camera gallery items are junk when both camera arrays are given.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    stats = _query_stats(similarity, query_ids, gallery_ids, query_cams, gallery_cams)
    return _summarise(stats, stats.ap, max_rank)


def veri_matlab_metrics(
    similarity: Any,
    query_ids: Any,
    gallery_ids: Any,
    query_cams: Any,
    gallery_cams: Any,
    max_rank: int = 10,
) -> dict:
    """Like `reid_metrics`, with VeRi official MATLAB-style AP (trapezoidal interpolation).

    AP follows ``compute_AP.m`` of the VeRi-776 / Market-1501 devkit; CMC and mINP are unchanged.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    stats = _query_stats(similarity, query_ids, gallery_ids, query_cams, gallery_cams)
    return _summarise(stats, stats.ap_veri, max_rank)


def topk_accuracy(
    logits_or_scores: Any, labels: Any, ks: Sequence[int] = (1, 5), ignore_index: int = -100
) -> dict:
    """Top-k accuracy in percent (keys ``top{k}``) over entries whose label is not ``ignore_index``.

    A sample is correct at k when its label is among the k highest scores (ties: lower class first).
    """
    scores = _to_numpy(logits_or_scores)
    if scores.ndim != 2:
        raise ValueError(f"logits_or_scores must be 2-D (num_samples x num_classes), got shape {scores.shape}")
    n, num_classes = scores.shape
    y = _vector(labels, "labels", n, "logits rows").astype(np.int64)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    keep = y != ignore_index
    if not keep.any():
        raise ValueError(f"no labelled entries: all {n} labels equal ignore_index={ignore_index}")
    scores, y = scores[keep], y[keep]
    if (y < 0).any() or (y >= num_classes).any():
        raise ValueError(f"labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}")
    top = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks)]
    # position of the true class among the top max(ks); max(ks) when absent
    hit = top == y[:, None]
    rank = np.where(hit.any(1), hit.argmax(1), top.shape[1])
    return {f"top{k}": 100.0 * float(np.mean(rank < k)) for k in ks}


def vehicleid_splits(vehicle_ids: Any, repeats: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """VehicleID query/gallery splits: per repeat, one random gallery image per vehicle, the rest queries.

    Repeat r draws from ``np.random.default_rng(seed + r)``. Returns sorted (query_indices,
    gallery_indices) per repeat; a vehicle with a single image only contributes a gallery item.
    """
    ids = _to_numpy(vehicle_ids)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError(f"vehicle_ids must be a non-empty 1-D array, got shape {ids.shape}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    by_vehicle = np.argsort(inverse, kind="stable")  # image indices grouped by vehicle
    starts = np.cumsum(counts) - counts
    splits = []
    for r in range(repeats):
        rng = np.random.default_rng(seed + r)
        gallery = np.sort(by_vehicle[starts + rng.integers(0, counts)])
        is_query = np.ones(len(ids), dtype=bool)
        is_query[gallery] = False
        splits.append((np.flatnonzero(is_query), gallery))
    return splits


def vehicleid_metrics(embeddings: Any, vehicle_ids: Any, repeats: int = 10, seed: int = 0) -> dict:
    """VehicleID evaluation: cosine similarity, `reid_metrics` without cameras on each split.

    Embeddings are L2-normalised here (a no-op for unit vectors). Returns the means over repeats
    ``rank1``, ``rank5``, ``mAP`` (percent), their population stds ``*_std`` and ``repeats``.
    """
    emb = _to_numpy(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (num_images x dim), got shape {emb.shape}")
    ids = _vector(vehicle_ids, "vehicle_ids", len(emb), "embeddings rows")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    runs = []
    for query, gallery in vehicleid_splits(ids, repeats, seed):
        if len(query) == 0:
            raise ValueError("no queries: every vehicle has a single image")
        runs.append(reid_metrics(emb[query] @ emb[gallery].T, ids[query], ids[gallery]))
    out: dict = {}
    for key in ("rank1", "rank5", "mAP"):
        values = np.array([m[key] for m in runs])
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    out["repeats"] = repeats
    return out
