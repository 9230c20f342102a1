"""Re-ranking: a second pass over a re-id ranking that uses the neighbourhoods of the images, not only the
query-to-gallery distances.

* `k_reciprocal_rerank` -- Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
  Encoding", CVPR 2017 (equation numbers of its arXiv version, 1701.08398). Two images are close when
  their k-reciprocal neighbourhoods overlap: each image's neighbourhood R*(p, k1) (Eqs. 3-5) is encoded
  as a weighted set over all images (Eq. 9), smoothed over its nearest neighbours (Eq. 12), compared by
  the Jaccard distance (Eq. 11), and mixed with the original distance (Eq. 13). Written from the paper;
  its authors' released code also divides the distances by their column maxima and rescales each set
  to sum 1, which this does not. As in that code, N(p, k1) is p and its k1 nearest, and the expansion
  of Eq. 12 averages over k2 images, p the first.
* `average_query_expansion` -- AQE (Chum et al., "Total Recall", ICCV 2007): each query is replaced by
  the normalised mean of itself and its k nearest gallery items. Only the queries are expanded (no
  database-side augmentation), so gallery embeddings, their caches and search indexes stay valid.

Distance: both take unit-norm embeddings (re-normalised here) and use the cosine distance
d = 1 - cos = |a - b|^2 / 2, half the squared Euclidean distance, where the paper uses a Mahalanobis or
Euclidean distance on its features: the same ranking, on a scale ([0, 2]) comparable to the Jaccard
distance's [0, 1] that Eq. 13 mixes it with.

Cost: k-reciprocal re-ranking ranks every image against every other, queries and gallery together, so
its time grows with (Q + G)^2 (Q + G is the paper's probe set plus gallery); its memory is the Q x G
result plus a few sparse sets per image. It refuses more than MAX_IMAGES images in total with a
ValueError: above that, search exactly without re-ranking. AQE costs one more exact search.

    >>> from rnnha.rerank import k_reciprocal_rerank
    >>> distance = k_reciprocal_rerank(query_embeddings, gallery_embeddings)  # Q x G, lower = closer
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    import numpy as np

__all__ = ["METHODS", "MAX_IMAGES", "k_reciprocal_rerank", "average_query_expansion", "jaccard_distance",
           "check_method", "rerank_similarity"]

METHODS = ("k-reciprocal", "aqe")  # the names `rerank=` takes (None or "none": no re-ranking)
MAX_IMAGES = 20_000  # queries + gallery images that k-reciprocal re-ranking accepts
_ROWS = 1024  # rows per block of an exact search: bounds its (block x N) temporaries
_MEETINGS = 8192  # nonzero weights per block of the Jaccard distance
_PAIRS = 16384  # image pairs per block when their similarities are computed one by one


def _embeddings(query: Any, gallery: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets as unit-norm float tensors (float64 if either is, else float32), checked."""
    q, g = torch.as_tensor(query), torch.as_tensor(gallery)
    for name, x in (("query", q), ("gallery", g)):
        if x.dim() != 2 or len(x) == 0 or not x.is_floating_point():
            raise ValueError(f"{name} must be a non-empty 2-D float array (images x dim), "
                             f"got shape {tuple(x.shape)} and dtype {x.dtype}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery embeddings differ in size: {q.shape[1]} and {g.shape[1]}")
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    return F.normalize(q.to(dtype), dim=1), F.normalize(g.to(dtype), dim=1)


def _like(result: torch.Tensor, query: Any) -> torch.Tensor | np.ndarray:
    """NumPy out for NumPy in."""
    return result if isinstance(query, torch.Tensor) else result.cpu().numpy()


def _nearest(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k rows of b most similar to each row of a (cosine), nearest first: an exact
    search in blocks of rows."""
    return torch.cat([(block @ b.T).topk(k, dim=1).indices for block in a.split(_ROWS)])


def _pair_similarity(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """cos(x[rows[i]], x[cols[i]]) for every i, in blocks (a pair's two rows are copied)."""
    return torch.cat([(x[r] * x[c]).sum(1) for r, c in zip(rows.split(_PAIRS), cols.split(_PAIRS))])


def _is_member(values: torch.Tensor, sets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """out[i, ...] = values[i, ...] is one of {sets[i, j] : mask[i, j]}, per row i (indices >= 0)."""
    members = torch.where(mask, sets, -1).sort(dim=1).values
    flat = values.reshape(len(values), -1)
    at = torch.searchsorted(members, flat).clamp(max=members.shape[1] - 1)
    return (members.gather(1, at) == flat).reshape(values.shape)


def _reciprocal(nn: torch.Tensor) -> torch.Tensor:
    """mask[p, m]: image nn[p, m] has p among its own neighbours too (Eq. 4, R(p, k) = {g in N(p, k) :
    p in N(g, k)}), for N x (k+1) neighbour lists; every (p, g) pair is looked up as (g, p)."""
    n = len(nn)
    rows = torch.arange(n, device=nn.device).unsqueeze(1).expand_as(nn)
    pairs = (rows * n + nn).flatten().sort().values
    back = (nn * n + rows).flatten()
    at = torch.searchsorted(pairs, back).clamp(max=len(pairs) - 1)
    return (pairs[at] == back).view_as(nn)


def _expanded_sets(nn: torch.Tensor, half: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R*(p, k) (Eq. 5) as (row, column) index pairs, from the N x (k+1) neighbour lists: R(p, k),
    plus R(q, k/2) of each q in R(p, k) that has at least 2/3 of its images in R(p, k)."""
    in_r = _reciprocal(nn)  # R(p, k)
    nn_half = nn[:, :half + 1]
    in_half = _reciprocal(nn_half)  # R(q, k/2), for every q
    cand, cand_in = nn_half[nn], in_half[nn]  # R(q, k/2) of each q = nn[p, m]: N x (k+1) x (k/2+1)
    overlap = (_is_member(cand, nn, in_r) & cand_in).sum(-1)  # |R(p, k) ∩ R(q, k/2)|
    accept = in_r & (3 * overlap >= 2 * cand_in.sum(-1))  # Eq. 5's 2/3 rule
    add = cand_in & accept.unsqueeze(-1)
    rows = torch.arange(len(nn), device=nn.device)
    r = torch.cat([rows.unsqueeze(1).expand_as(nn)[in_r], rows.view(-1, 1, 1).expand_as(cand)[add]])
    c = torch.cat([nn[in_r], cand[add]])
    unique = torch.unique(r * len(nn) + c)  # the union: each pair once
    return unique // len(nn), unique % len(nn)


class _Weights(NamedTuple):
    """A non-negative N x M matrix as its nonzeros, sorted by row then column: one weighted set per row."""

    row: torch.Tensor
    col: torch.Tensor
    val: torch.Tensor
    shape: tuple[int, int]


def _weights(row: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> _Weights:
    """The matrix with these entries, the values of a repeated (row, column) summed."""
    key, inverse = torch.unique(row * shape[1] + col, return_inverse=True)
    total = torch.zeros(len(key), dtype=val.dtype, device=val.device).index_add_(0, inverse, val)
    return _Weights(key // shape[1], key % shape[1], total, shape)


def _ranges(start: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """start[i], start[i] + 1, ..., start[i] + count[i] - 1 for every i, concatenated."""
    ends = torch.cumsum(count, 0)
    total = int(ends[-1]) if len(ends) else 0
    return torch.arange(total, device=count.device) + (start - ends + count).repeat_interleave(count)


def _select_rows(w: _Weights, rows: torch.Tensor) -> _Weights:
    """w's rows `rows`, in that order (a row may come more than once)."""
    count = torch.bincount(w.row, minlength=w.shape[0])
    at = _ranges((torch.cumsum(count, 0) - count)[rows], count[rows])
    new_row = torch.arange(len(rows), device=rows.device).repeat_interleave(count[rows])
    return _Weights(new_row, w.col[at], w.val[at], (len(rows), w.shape[1]))


def _jaccard(a: _Weights, b: _Weights) -> torch.Tensor:
    """Eq. 11 between the rows of a and b (see jaccard_distance), from their nonzeros only."""
    dtype = torch.promote_types(a.val.dtype, b.val.dtype)
    order = torch.argsort(b.col, stable=True)  # b's nonzeros column by column: the inverted index
    b_row, b_val = b.row[order], b.val[order].to(dtype)
    count = torch.bincount(b.col, minlength=b.shape[1])
    start = torch.cumsum(count, 0) - count
    shared = torch.zeros(a.shape[0], b.shape[0], dtype=dtype, device=a.val.device)  # sum_k min(a_ik, b_jk)
    for s in range(0, len(a.val), _MEETINGS):  # blocks of a's nonzeros bound the temporaries
        row, col, val = a.row[s:s + _MEETINGS], a.col[s:s + _MEETINGS], a.val[s:s + _MEETINGS].to(dtype)
        meets = count[col]  # each nonzero a_ik meets the b_jk of its column
        at = _ranges(start[col], meets)
        shared.index_put_((row.repeat_interleave(meets), b_row[at]),
                          torch.minimum(val.repeat_interleave(meets), b_val[at]), accumulate=True)
    a_sum = torch.zeros(a.shape[0], dtype=dtype, device=shared.device).index_add_(0, a.row, a.val.to(dtype))
    b_sum = torch.zeros(b.shape[0], dtype=dtype, device=shared.device).index_add_(0, b.row, b.val.to(dtype))
    union = (a_sum[:, None] + b_sum[None, :]).sub_(shared)  # sum max = sum a + sum b - sum min
    return shared.div_(union.clamp_min_(torch.finfo(dtype).tiny)).neg_().add_(1)  # in place: A x B is big


def jaccard_distance(a: Any, b: Any) -> torch.Tensor | np.ndarray:
    """Eq. 11, d_J(i, j) = 1 - sum_k min(a_ik, b_jk) / sum_k max(a_ik, b_jk), between the rows of two
    non-negative weight matrices over the same columns (torch or NumPy, as a): A x B.

    Only the nonzeros count: each nonzero a_ik meets the nonzeros of column k of b (the paper's
    inverted index), so the cost is the number of such meetings, not A x B x columns. A row without
    weight is at distance 1 from every row."""
    dense = [torch.as_tensor(m) for m in (a, b)]
    if any(m.dim() != 2 for m in dense) or dense[0].shape[1] != dense[1].shape[1]:
        raise ValueError(f"need two 2-D weight matrices over the same columns, got shapes "
                         f"{tuple(dense[0].shape)} and {tuple(dense[1].shape)}")
    if any(bool((m < 0).any()) for m in dense):
        raise ValueError("Jaccard weights must be non-negative")
    sets = []
    for m in dense:
        row, col = m.nonzero(as_tuple=True)
        sets.append(_Weights(row, col, m[row, col], tuple(m.shape)))
    return _like(_jaccard(*sets), a)


def k_reciprocal_rerank(query: Any, gallery: Any, k1: int = 20, k2: int = 6,
                        lambda_: float = 0.3) -> torch.Tensor | np.ndarray:
    """Re-ranked distances, Q x G (lower = closer), of unit-norm query and gallery embeddings (torch or
    NumPy; NumPy in, NumPy out; float32, or float64 when given): Eq. 13, d* = (1 - lambda_) d_J +
    lambda_ d, with d = 1 - cos and d_J the Jaccard distance of the k-reciprocal encodings (k1 for
    R(p, k1), k2 for the local query expansion; the paper's defaults). lambda_=1 gives back d.

    Queries and gallery are one set of images, as in the paper; when the queries are the gallery (the
    same object, every image a query against all), it is that set once. Refuses more than MAX_IMAGES
    images in total (ValueError): time grows with their number squared."""
    same = query is gallery
    q, g = _embeddings(query, gallery)
    if k1 < 1 or k2 < 1 or not 0 <= lambda_ <= 1:
        raise ValueError(f"need k1 >= 1, k2 >= 1 and 0 <= lambda_ <= 1, got {k1}, {k2}, {lambda_}")
    x = g if same else torch.cat([q, g])  # N images: the probes and the gallery together
    n = len(x)
    if n > MAX_IMAGES or len(q) * len(g) > (MAX_IMAGES // 2) ** 2:  # the images, and the dense Q x G result
        raise ValueError(f"k-reciprocal re-ranking of {len(q)} queries and {len(g)} gallery images ({n} in "
                         f"all) exceeds its limit of {MAX_IMAGES} images: it compares every image with every "
                         "other, so time grows with their number squared; search exactly without re-ranking")
    q_rows = torch.arange(len(q), device=x.device)
    g_rows = torch.arange(len(g), device=x.device) + (0 if same else len(q))
    k1, k2 = min(k1, n - 1), min(k2, n)
    nn = _nearest(x, x, max(k1 + 1, k2))  # N(p, k), Eq. 3: p (d = 0), then its k nearest
    rows, cols = _expanded_sets(nn[:, :k1 + 1], round(k1 / 2))
    # Eq. 9: V_p,g = exp(-d(p, g)) for g in R*(p, k1), else 0
    v = _Weights(rows, cols, torch.exp(_pair_similarity(x, rows, cols) - 1), (n, n))
    if k2 > 1:  # Eq. 12: V_p <- the mean of V_g over the k2 images nearest p, p itself first
        near = _select_rows(v, nn[:, :k2].flatten())  # row p * k2 + i: V of p's i-th nearest
        v = _weights(near.row // k2, near.col, near.val / k2, (n, n))
    d_jaccard = _jaccard(_select_rows(v, q_rows), _select_rows(v, g_rows))  # Eqs. 10-11
    d = (q @ g.T).neg_().add_(1)
    return _like(d_jaccard.mul_(1 - lambda_).add_(d, alpha=lambda_), query)  # Eq. 13


def average_query_expansion(query: Any, gallery: Any, k: int = 5) -> torch.Tensor | np.ndarray:
    """Each query replaced by the normalised mean of itself and its k nearest gallery items (cosine),
    Q x D, unit norm (torch or NumPy, as the query). The gallery is not changed."""
    q, g = _embeddings(query, gallery)
    if k < 1:
        raise ValueError(f"AQE needs k >= 1 gallery neighbours, got {k}")
    near = _nearest(q, g, min(k, len(g)))
    return _like(F.normalize(q + g[near].sum(1), dim=1), query)


def check_method(method: str | None) -> str | None:
    """The re-ranking `method` names (None for None or "none"); ValueError for an unknown name."""
    if method is None or method == "none":
        return None
    if method not in METHODS:
        raise ValueError(f"unknown re-ranking {method!r}; choose one of {', '.join(METHODS)} (or none)")
    return method


def rerank_similarity(query: torch.Tensor, gallery: torch.Tensor, method: str | None) -> torch.Tensor:
    """Q x G scores for ranking, higher = better, of unit-norm embeddings: the cosine similarity (method
    None), minus the k-reciprocal distance, or the cosine similarity of the AQE-expanded queries."""
    method = check_method(method)
    if method is None:
        return query @ gallery.T
    if method == "k-reciprocal":
        return -k_reciprocal_rerank(query, gallery)
    q, g = _embeddings(query, gallery)
    return average_query_expansion(q, g) @ g.T
