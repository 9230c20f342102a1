"""rnnha.metrics: hand-computed cases, an independent AP (torchmetrics), plain-loop references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_average_precision

from rnnha.metrics import topk_accuracy, reid_metrics, vehicleid_metrics, vehicleid_splits, veri_matlab_metrics

# One query (id 0) against 5 gallery items already in ranked order: matches at ranks 1 and 3.
SIM5 = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
GIDS5 = np.array([0, 1, 0, 1, 1])


def test_hand_case_ap_cmc_minp():
    m = reid_metrics(SIM5, [0], GIDS5)
    assert m["mAP"] == pytest.approx(100 * (1 / 1 + 2 / 3) / 2)  # precision at each hit: 1/1, 2/3
    assert m["mINP"] == pytest.approx(100 * 2 / 3)  # 2 matches, hardest at rank 3
    assert m["rank1"] == m["rank5"] == m["rank10"] == 100.0
    assert (m["num_valid_queries"], m["num_queries"]) == (1, 1)


def test_two_queries_are_averaged_and_cmc_is_flat_beyond_gallery():
    # q0 (id 0): single match at rank 1 -> AP 1, INP 1/1.  q1 (id 1): matches at ranks 2 and 3 of
    # [0, 1, 1] -> AP (1/2 + 2/3)/2 = 7/12, INP 2/3, first hit at rank 2.
    sim = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]])
    m = reid_metrics(sim, [0, 1], [0, 1, 1], max_rank=4)
    assert m["mAP"] == pytest.approx(100 * (1 + 7 / 12) / 2)
    assert m["mINP"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert m["rank1"] == pytest.approx(50.0)
    assert m["rank5"] == m["rank10"] == 100.0  # G = 3: ranks beyond 3 repeat CMC@3
    assert m["cmc"] == pytest.approx([50.0, 100.0, 100.0, 100.0])


def test_first_match_at_rank_six():
    sim = np.linspace(1, 0, 12)[None]
    gids = np.ones(12, dtype=int)
    gids[5] = 0  # only match at rank 6: CMC 0 at ranks 1..5, 1 from 6 on; AP = INP = 1/6
    m = reid_metrics(sim, [0], gids)
    assert (m["rank1"], m["rank5"], m["rank10"]) == (0.0, 0.0, 100.0)
    assert m["mAP"] == pytest.approx(100 / 6) and m["mINP"] == pytest.approx(100 / 6)


def test_ties_are_broken_by_gallery_index():
    # equal scores: gallery order [id 1, id 0] is kept, so the match sits at rank 2
    m = reid_metrics(np.zeros((1, 2)), [0], [1, 0])
    assert m["rank1"] == 0.0 and m["mAP"] == pytest.approx(50.0)


def test_junk_same_id_same_camera_is_removed():
    # query: id 0, cam 0. Ranked gallery: [id0/cam0 (junk), id1/cam0 (negative, kept), id0/cam1 (match)]
    sim, gids, gcams = np.array([[0.9, 0.8, 0.7]]), [0, 1, 0], [0, 0, 1]
    m = reid_metrics(sim, [0], gids, [0], gcams)
    # after removal: [negative, match] -> first hit at rank 2; AP = 1/2; INP = 1/2
    assert (m["rank1"], m["rank5"]) == (0.0, 100.0)
    assert m["mAP"] == pytest.approx(50.0) and m["mINP"] == pytest.approx(50.0)
    # without cameras nothing is junk: matches at ranks 1 and 3
    m = reid_metrics(sim, [0], gids)
    assert m["rank1"] == 100.0 and m["mAP"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_junk_ranked_first_then_match():
    # [id0/cam0 (junk), id0/cam2 (match), id1/cam0] -> the match becomes rank 1
    m = reid_metrics(np.array([[0.9, 0.8, 0.7]]), [0], [0, 0, 1], [0], [0, 2, 0])
    assert m["rank1"] == 100.0 and m["mAP"] == 100.0 and m["mINP"] == 100.0


def test_query_without_match_is_skipped():
    # q1 (id 7) has no gallery match; q2's only same-id item shares its camera -> junk -> no match
    sim = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])
    m = reid_metrics(sim, [0, 7, 1], [0, 1], [0, 0, 1], [1, 1])
    assert (m["num_valid_queries"], m["num_queries"]) == (1, 3)
    assert m["mAP"] == 100.0 and m["rank1"] == 100.0


def test_no_valid_query_raises():
    with pytest.raises(ValueError, match="no valid queries"):
        reid_metrics(np.ones((2, 2)), [5, 6], [0, 1])
    with pytest.raises(ValueError, match="no valid queries"):  # every match is junk
        reid_metrics(np.ones((1, 2)), [0], [0, 0], [3], [3, 3])


def _random_case(seed: int, nq: int = 20, ng: int = 50):
    rng = np.random.default_rng(seed)
    sim = rng.uniform(0.01, 1.0, (nq, ng))  # positive: torchmetrics ignores targets with preds <= 0
    return sim, rng.integers(0, 8, nq), rng.integers(0, 8, ng), rng.integers(0, 4, nq), rng.integers(0, 4, ng)


def _reference(sim, qids, gids, qcams, gcams):
    """Plain per-query loop: kept (non-junk) columns and their match flags in ranked order."""
    for q in range(len(sim)):
        keep = ~((gids == qids[q]) & (gcams == qcams[q]))
        s, match = sim[q, keep], gids[keep] == qids[q]
        if match.any():
            yield s, match, match[np.argsort(-s, kind="stable")]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchmetrics_and_loops(seed):
    sim, qids, gids, qcams, gcams = _random_case(seed)
    m = reid_metrics(sim, qids, gids, qcams, gcams)
    aps, r1, r5, inp = [], [], [], []
    for s, match, ranked in _reference(sim, qids, gids, qcams, gcams):
        aps.append(retrieval_average_precision(torch.from_numpy(s), torch.from_numpy(match)).item())
        first = int(np.flatnonzero(ranked)[0]) + 1
        r1.append(first <= 1)
        r5.append(first <= 5)
        inp.append(ranked.sum() / (np.flatnonzero(ranked)[-1] + 1))
    assert m["num_valid_queries"] == len(aps) > 10
    assert m["mAP"] == pytest.approx(100 * np.mean(aps), rel=1e-6)
    assert m["rank1"] == pytest.approx(100 * np.mean(r1))
    assert m["rank5"] == pytest.approx(100 * np.mean(r5))
    assert m["mINP"] == pytest.approx(100 * np.mean(inp))


def test_veri_matlab_ap_hand_case():
    # compute_AP.m walks every non-junk rank with old_precision = precision of the previous rank:
    #   rank 1 (hit):  recall 1/2, precision 1   -> ap += 1/2 * (1 + 1)/2     = 0.5
    #   rank 2 (miss): recall 1/2, precision 1/2 -> ap += 0
    #   rank 3 (hit):  recall 1,   precision 2/3 -> ap += 1/2 * (1/2 + 2/3)/2 = 0.291666...
    m = veri_matlab_metrics(SIM5, [0], GIDS5, [0], [1, 1, 1, 1, 1])
    assert m["mAP"] == pytest.approx(100 * (0.5 * (1 + 1) / 2 + 0.5 * (1 / 2 + 2 / 3) / 2))
    # CMC / mINP are those of reid_metrics
    std = reid_metrics(SIM5, [0], GIDS5, [0], [1] * 5)
    assert {k: m[k] for k in ("rank1", "rank5", "mINP")} == {k: std[k] for k in ("rank1", "rank5", "mINP")}


def _compute_ap_m(good: np.ndarray, junk: np.ndarray, index: np.ndarray) -> float:
    """Line-by-line port of compute_AP.m (Market-1501 / VeRi devkit)."""
    ngood, old_recall, old_precision, ap, intersect, j, good_now = len(good), 0.0, 1.0, 0.0, 0, 0, 0
    for idx in index:
        flag = idx in good
        good_now += flag
        if idx in junk:
            continue
        intersect += flag
        recall, precision = intersect / ngood, intersect / (j + 1)
        ap += (recall - old_recall) * ((old_precision + precision) / 2)
        old_recall, old_precision, j = recall, precision, j + 1
        if good_now == ngood:
            break
    return ap


@pytest.mark.parametrize("seed", [3, 4])
def test_veri_matlab_ap_matches_devkit_loop(seed):
    sim, qids, gids, qcams, gcams = _random_case(seed)
    aps = []
    for q in range(len(sim)):
        good = np.flatnonzero((gids == qids[q]) & (gcams != qcams[q]))
        if len(good):
            junk = np.flatnonzero((gids == qids[q]) & (gcams == qcams[q]))
            aps.append(_compute_ap_m(set(good), set(junk), np.argsort(-sim[q], kind="stable")))
    m = veri_matlab_metrics(sim, qids, gids, qcams, gcams)
    assert m["num_valid_queries"] == len(aps)
    assert m["mAP"] == pytest.approx(100 * np.mean(aps), rel=1e-9)


def test_torch_inputs_any_dtype_match_numpy():
    sim, qids, gids, qcams, gcams = _random_case(5)
    t = torch.from_numpy(sim).to(torch.bfloat16)
    ref = reid_metrics(t.float().numpy(), qids, gids, qcams, gcams)  # same (bf16-rounded) scores
    got = reid_metrics(t, *(torch.from_numpy(a) for a in (qids, gids, qcams, gcams)))
    assert got == ref


def test_topk_accuracy_ignores_labels():
    scores = np.array(
        [
            [9, 1, 2, 3, 4, 5],  # label 0: best -> top1 and top5 hit
            [9, 8, 7, 1, 2, 3],  # label 2: 3rd best -> top5 hit only
            [0, 0, 0, 0, 0, 9],  # ignored
            [6, 5, 4, 3, 2, 1],  # label 5: 6th of 6 -> miss
        ],
        dtype=float,
    )
    labels = torch.tensor([0, 2, -100, 5])
    assert topk_accuracy(scores, labels) == pytest.approx({"top1": 100 / 3, "top5": 200 / 3})
    assert topk_accuracy(torch.tensor(scores, dtype=torch.bfloat16), labels, ks=(2, 3)) == pytest.approx(
        {"top2": 100 / 3, "top3": 200 / 3}
    )
    with pytest.raises(ValueError, match="no labelled entries"):
        topk_accuracy(scores, [-100] * 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        topk_accuracy(scores, [0, 1, 2, 6])


def test_vehicleid_splits():
    ids = np.array([3, 3, 3, 7, 7, 9, 1, 1, 1, 1, 5])  # vehicles 9 and 5 have a single image
    splits = vehicleid_splits(ids, repeats=5, seed=0)
    assert len(splits) == 5
    for query, gallery in splits:
        assert sorted(ids[gallery].tolist()) == sorted(set(ids.tolist()))  # one gallery image per vehicle
        assert np.intersect1d(query, gallery).size == 0
        assert np.array_equal(np.sort(np.concatenate([query, gallery])), np.arange(len(ids)))
        assert {5, 9}.isdisjoint(ids[query].tolist())
    again = vehicleid_splits(ids, repeats=5, seed=0)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    other = vehicleid_splits(ids, repeats=5, seed=1)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(splits, other))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(splits, splits[1:]))  # repeats differ


def _clustered(seed: int = 0, vehicles: int = 30, dim: int = 16):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, vehicles)
    ids = np.repeat(np.arange(vehicles), counts)
    emb = rng.normal(size=(vehicles, dim))[ids] + 1e-4 * rng.normal(size=(len(ids), dim))
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), ids


def test_vehicleid_metrics_separable_embeddings():
    emb, ids = _clustered()
    m = vehicleid_metrics(emb, ids, repeats=3)
    assert (m["rank1"], m["rank5"], m["mAP"]) == (100.0, 100.0, pytest.approx(100.0))
    assert m["rank1_std"] == m["rank5_std"] == 0.0 and m["mAP_std"] == pytest.approx(0.0, abs=1e-9)
    assert m["repeats"] == 3


def test_vehicleid_metrics_torch_equals_numpy():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    ids = rng.integers(0, 15, 60)
    ref = vehicleid_metrics(emb, ids, repeats=4, seed=2)
    assert 0 < ref["rank1"] < 100 and ref["rank1_std"] > 0
    assert vehicleid_metrics(torch.from_numpy(emb), torch.from_numpy(ids), repeats=4, seed=2) == ref


def test_bad_shapes_raise():
    sim = np.zeros((2, 3))
    with pytest.raises(ValueError, match="similarity must be a 2-D"):
        reid_metrics(np.zeros(3), [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match=r"query_ids must be 1-D of length 2 \(similarity rows\)"):
        reid_metrics(sim, [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match=r"gallery_ids must be 1-D of length 3 \(similarity columns\)"):
        reid_metrics(sim, [0, 1], [0, 1])
    with pytest.raises(ValueError, match="must be given together"):
        reid_metrics(sim, [0, 1], [0, 1, 2], query_cams=[0, 0])
    with pytest.raises(ValueError, match="gallery_cams must be 1-D of length 3"):
        veri_matlab_metrics(sim, [0, 1], [0, 1, 2], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="similarity is empty"):
        reid_metrics(np.zeros((2, 0)), [0, 1], [])
    with pytest.raises(ValueError, match="NaN"):
        reid_metrics(np.full((2, 3), np.nan), [0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="logits_or_scores must be 2-D"):
        topk_accuracy(np.zeros(4), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="labels must be 1-D of length 2"):
        topk_accuracy(np.zeros((2, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match="vehicle_ids must be 1-D of length 4"):
        vehicleid_metrics(np.zeros((4, 8)), [0, 1])
    with pytest.raises(ValueError, match="no queries"):
        vehicleid_metrics(np.eye(3), [0, 1, 2], repeats=1)
