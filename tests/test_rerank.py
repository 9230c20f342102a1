"""rnnha.rerank (k-reciprocal re-ranking, average query expansion) on hand-made cases and against a
plain-loop reading of the paper; the `rerank` option of the protocols, of `python -m rnnha.evaluate` and
of Gallery.search."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnha.data.base import Sample
from rnnha import rerank
from rnnha.gallery import Gallery, GalleryItem
from rnnha.metrics import reid_metrics
from rnnha.protocols import Features, reid_between, similarity_between
from rnnha.rerank import (MAX_IMAGES, average_query_expansion, check_method, jaccard_distance,
                          k_reciprocal_rerank, rerank_similarity)


def circle(*degrees: float) -> np.ndarray:
    """Unit vectors at these angles: on a circle, cosine distance grows with the angle between."""
    r = np.radians(degrees)
    return np.stack([np.cos(r), np.sin(r)], 1)


# One query at 0 degrees. D, the nearest gallery image, belongs to the tight cluster B on the other side;
# T and A2, A3 are the query's vehicle. Ranked by cosine: D (5), T (6), A2 (6.5), B2 (7), A3 (7.2), ...
QUERY = circle(0)
NAMES = ["D", "B2", "B3", "B4", "T", "A2", "A3"]
GALLERY = circle(-5, -7, -8, -9.5, 6, 6.5, 7.2)


def reference(query: np.ndarray, gallery: np.ndarray, k1: int, k2: int, lambda_: float, same: bool = False):
    """Zhong et al. 2017 as the paper writes it, with sets and loops; d = 1 - cos, N(p, k) is p and its k
    nearest, Eq. 12 averages over p and its k2 - 1 nearest (rnnha.rerank's reading). Also returns how
    many R(q, k/2) sets Eq. 5 added, so that a test can check it was exercised."""
    x = gallery if same else np.concatenate([query, gallery])
    n, nq = len(x), len(query)
    d = 1 - x @ x.T
    order = np.argsort(d, axis=1, kind="stable")

    def nearest(p, k):
        return set(order[p, :k + 1].tolist())

    def reciprocal(p, k):  # Eq. 4
        return {g for g in nearest(p, k) if p in nearest(g, k)}

    v, added = np.zeros((n, n)), 0
    for p in range(n):
        r = reciprocal(p, k1)
        expanded = set(r)
        for q in r:  # Eq. 5
            r_half = reciprocal(q, round(k1 / 2))
            if 3 * len(r & r_half) >= 2 * len(r_half):
                added += bool(r_half - r)
                expanded |= r_half
        for g in expanded:  # Eq. 9
            v[p, g] = np.exp(-d[p, g])
    v = np.stack([v[order[p, :k2]].mean(0) for p in range(n)])  # Eq. 12
    g0 = 0 if same else nq
    d_j = np.array([[1 - np.minimum(v[i], v[g0 + j]).sum() / np.maximum(v[i], v[g0 + j]).sum()
                     for j in range(len(gallery))] for i in range(nq)])  # Eq. 11
    return (1 - lambda_) * d_j + lambda_ * d[:nq, g0:g0 + len(gallery)], added  # Eq. 13


def clustered(n_ids: int, per_id: int, dim: int = 8, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.normal(size=(n_ids, dim)), per_id, 0) + noise * rng.normal(size=(n_ids * per_id, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_true_match_ranked_second_by_cosine_comes_first_after_re_ranking():
    """D is nearest to the query, but its 3 nearest are B2-B4, so the query is not among them: D is not
    a k-reciprocal neighbour, and D's neighbourhood (the B cluster) shares nothing with the query's
    {query, T, A2, A3}, so d_J = 1 for D and near 0 for T, A2, A3 (k1=3; k2=1: no local expansion)."""
    cosine = 1 - QUERY @ GALLERY.T
    assert [NAMES[i] for i in np.argsort(cosine[0])[:2]] == ["D", "T"]
    distance = k_reciprocal_rerank(QUERY, GALLERY, k1=3, k2=1)
    ranked = [NAMES[i] for i in np.argsort(distance[0])]
    assert ranked[0] == "T" and set(ranked[:3]) == {"T", "A2", "A3"}
    assert distance[0, 0] == pytest.approx(0.7 * 1 + 0.3 * cosine[0, 0])  # D: disjoint sets, d_J = 1


@pytest.mark.parametrize("k1, k2", [(3, 1), (5, 3), (6, 6), (20, 6)])
def test_matches_a_plain_loop_reading_of_the_paper(k1, k2):
    x = clustered(8, 5)
    ours = k_reciprocal_rerank(x[:12], x[12:], k1, k2)
    expected, added = reference(x[:12], x[12:], k1, k2, 0.3)
    assert added > 0  # the 2/3 rule of Eq. 5 did add sets
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_queries_that_are_the_gallery_are_one_set():
    x = clustered(6, 4, seed=1)
    expected, _ = reference(x, x, 5, 3, 0.3, same=True)
    np.testing.assert_allclose(k_reciprocal_rerank(x, x, 5, 3), expected, atol=1e-12)
    twice, _ = reference(x, x.copy(), 5, 3, 0.3)  # two copies: every image has a twin at distance 0
    assert not np.allclose(expected, twice)
    np.testing.assert_allclose(k_reciprocal_rerank(x, x.copy(), 5, 3), twice, atol=1e-12)


def test_jaccard_distance_of_weighted_sets():
    sets = jaccard_distance(np.array([[1.0, 1, 0, 0]]), np.array([[1.0, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0],
                                                                  [0, 0, 0, 0]]))
    np.testing.assert_allclose(sets, [[0, 1, 2 / 3, 1]])  # identical, disjoint, 1 of 3 shared, empty
    weighted = jaccard_distance(torch.tensor([[0.5, 1.0]]), torch.tensor([[1.0, 0.5]]))
    assert isinstance(weighted, torch.Tensor) and weighted.item() == pytest.approx(1 - 1.0 / 2.0)  # min / max
    with pytest.raises(ValueError, match="non-negative"):
        jaccard_distance(np.array([[-1.0]]), np.array([[1.0]]))


def test_identical_neighbourhoods_are_at_zero_and_disjoint_ones_at_one():
    """lambda_=0 leaves the Jaccard distance alone: a query equal to a gallery image has that image's
    neighbourhood (0); a cluster on the far side of the sphere shares no neighbour with it (1)."""
    near, far = clustered(1, 6, seed=2), -clustered(1, 6, seed=2)
    distance = k_reciprocal_rerank(near[:1], np.concatenate([near, far]), k1=4, k2=2, lambda_=0)
    assert distance[0, 0] == pytest.approx(0, abs=1e-6)
    np.testing.assert_array_equal(distance[0, 6:], 1.0)


def test_lambda_one_gives_back_the_cosine_distance():
    x = clustered(5, 4, seed=3)
    distance = k_reciprocal_rerank(x[:5], x[5:], lambda_=1)
    np.testing.assert_allclose(distance, 1 - x[:5] @ x[5:].T, atol=1e-12)
    assert not np.allclose(k_reciprocal_rerank(x[:5], x[5:]), distance)


def test_types_shapes_and_bad_arguments():
    q, g = (torch.nn.functional.normalize(torch.randn(n, 16), dim=1) for n in (3, 9))
    for query, gallery, dtype in ((q, g, torch.float32), (q.bfloat16(), g.bfloat16(), torch.float32),
                                  (q.double(), g, torch.float64)):
        out = k_reciprocal_rerank(query, gallery)
        assert isinstance(out, torch.Tensor) and out.shape == (3, 9) and out.dtype == dtype
        expanded = average_query_expansion(query, gallery)
        assert expanded.shape == (3, 16) and expanded.dtype == dtype
        torch.testing.assert_close(expanded.norm(dim=1), torch.ones(3, dtype=dtype))
    out = k_reciprocal_rerank(q.numpy(), g.numpy().astype(np.float64))
    assert isinstance(out, np.ndarray) and out.shape == (3, 9) and out.dtype == np.float64
    assert isinstance(average_query_expansion(q.numpy(), g.numpy()), np.ndarray)
    assert k_reciprocal_rerank(q[:1], g[:1]).shape == (1, 1)  # two images: k1 and k2 shrink to fit
    for bad in (dict(k1=0), dict(k2=0), dict(lambda_=1.5)):
        with pytest.raises(ValueError, match="need k1 >= 1"):
            k_reciprocal_rerank(q, g, **bad)
    with pytest.raises(ValueError, match="differ in size"):
        k_reciprocal_rerank(q, g[:, :8])
    with pytest.raises(ValueError, match="2-D float"):
        average_query_expansion(q[0], g)
    with pytest.raises(ValueError, match="k >= 1"):
        average_query_expansion(q, g, k=0)
    assert check_method("none") is None and check_method(None) is None
    with pytest.raises(ValueError, match="unknown re-ranking 'kr'"):
        check_method("kr")


def test_refuses_more_images_than_its_limit(monkeypatch):
    with pytest.raises(ValueError, match=f"{MAX_IMAGES + 1} in all.*limit of {MAX_IMAGES}.*without re-ranking"):
        k_reciprocal_rerank(torch.ones(1, 2), torch.ones(MAX_IMAGES, 2))
    monkeypatch.setattr(rerank, "MAX_IMAGES", 10)
    assert k_reciprocal_rerank(torch.ones(1, 2), torch.ones(9, 2)).shape == (1, 9)  # at the limit: runs
    with pytest.raises(ValueError, match="11 in all"):
        k_reciprocal_rerank(torch.ones(1, 2), torch.ones(10, 2))


# AQE: a query at 0 degrees, a lone gallery image L at 10, a cluster C at -12, -13, -14
AQE_QUERY, AQE_GALLERY = circle(0), circle(10, -12, -13, -14)


def test_aqe_pulls_the_query_towards_its_neighbours():
    """The mean of the query, L, C1 and C2 lies at about -3.77 degrees: C1 is now nearer than L."""
    assert np.argmax(AQE_QUERY @ AQE_GALLERY.T) == 0
    expanded = average_query_expansion(AQE_QUERY, AQE_GALLERY, k=3)
    assert np.degrees(np.arctan2(expanded[0, 1], expanded[0, 0])) == pytest.approx(-3.77, abs=0.01)
    assert torch.argmax(rerank_similarity(torch.tensor(AQE_QUERY), torch.tensor(AQE_GALLERY), "aqe")) == 1


def test_aqe_with_one_neighbour_leaves_a_query_equal_to_a_gallery_image_unchanged():
    gallery = clustered(3, 3, seed=4)
    np.testing.assert_allclose(average_query_expansion(gallery[4:5], gallery, k=1), gallery[4:5], atol=1e-12)
    assert not np.allclose(average_query_expansion(gallery[4:5], gallery, k=3), gallery[4:5])


def samples(ids: list[str], camera: str) -> list[Sample]:
    return [Sample(Path(f"{camera}_{i}.jpg"), {"vehicle": v}, camera) for i, v in enumerate(ids)]


def test_reid_between_re_ranks_on_request_and_records_it():
    query, gallery = samples(["A"], "1"), samples(["B", "B", "B", "B", "A", "A", "A"], "2")
    q, g = (Features(torch.tensor(x, dtype=torch.float32), []) for x in (QUERY, GALLERY))
    plain = reid_between(q, g, query, gallery)
    assert plain == reid_metrics(q.embeddings @ g.embeddings.T, ["A"], [s.labels["vehicle"] for s in gallery],
                                 ["1"], ["2"] * 7)  # unchanged without re-ranking: no new keys
    assert plain["rank1"] == 0.0
    for method in ("k-reciprocal", "aqe"):
        result = reid_between(q, g, query, gallery, rerank=method)
        assert result["rerank"] == method and 0 <= result["rerank_seconds"] < 5
        expected = reid_metrics(rerank_similarity(q.embeddings, g.embeddings, method), ["A"],
                                [s.labels["vehicle"] for s in gallery], ["1"], ["2"] * 7)
        assert {k: v for k, v in result.items() if not k.startswith("rerank")} == expected
    similarity, ran = similarity_between(q.embeddings, g.embeddings, "none")
    assert ran == {} and torch.equal(similarity, q.embeddings @ g.embeddings.T)
    with pytest.raises(ValueError, match="unknown re-ranking"):
        reid_between(q, g, query, gallery, rerank="zhong")


def test_evaluate_rerank_option(khoa_root, tmp_path, monkeypatch, capsys):
    """`python -m rnnha.evaluate --rerank ...` on three validation vehicles with a small untrained model:
    the JSON says which re-ranking ran and how long it took; without --rerank nothing changes."""
    import zoo
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.evaluate import main
    from rnnha.predictor import Predictor

    names = ["car_0139_cam1.jpg", "car_0139_cam2.jpg", "car_0129_cam1.jpg", "car_0129_cam2.jpg",
             "truck_0011_cam1.jpg", "truck_0011_cam2.jpg"]
    (tmp_path / "three.txt").write_text("\n".join(names))
    torch.manual_seed(0)
    model = RNNHA(RNNHAConfig(num_classes=[4, 5], level_names=["type", "vehicle"], hidden_size=16,
                              input_size=64, pretrained_backbone=True))
    monkeypatch.setattr(zoo, "load_model", lambda name, device=None: Predictor(model, device="cpu"))
    args = ["--model", "tiny", "--dataset", "two-camera", "--root", str(khoa_root), "--list",
            str(tmp_path / "three.txt"), "--json"]
    results = {}
    for method in ("none", "k-reciprocal", "aqe"):
        assert main(args + ["--rerank", method]) == 0
        results[method] = json.loads(capsys.readouterr().out)
    assert "rerank" not in results["none"] and "rerank" not in results["none"]["cam1->cam2"]
    for method in ("k-reciprocal", "aqe"):
        result = results[method]
        assert result["rerank"] == method and result["cam2->cam1"]["rerank"] == method
        assert result["rerank_seconds"] == pytest.approx(
            result["cam1->cam2"]["rerank_seconds"] + result["cam2->cam1"]["rerank_seconds"], abs=2e-3)
        assert result["cam1->cam2"]["num_queries"] == 3
    assert main(args[:3] + ["vehicleid", *args[4:6], "--rerank", "aqe"]) == 2  # a kind that does not re-rank
    assert "bad options {'rerank': 'aqe'}" in capsys.readouterr().err


def gallery_of(embeddings: np.ndarray, digests: list[str] | None = None) -> Gallery:
    digests = digests or [f"d{i}" for i in range(len(embeddings))]
    items = [GalleryItem(Path(f"{i}.jpg"), digest=d) for i, d in enumerate(digests)]
    return Gallery(items, torch.tensor(embeddings, dtype=torch.float32), torch.zeros(len(items), 2, 2))


def test_gallery_search_re_ranks_and_still_skips_the_query_image():
    """Index 0 is a copy of the query's own image (skipped by digest); the rest is the AQE case: the
    expanded query (the mean of all five, at -5.8 degrees) has C1, C2, C3 before L."""
    gallery = gallery_of(np.concatenate([AQE_QUERY, AQE_GALLERY]), ["own", "l", "c1", "c2", "c3"])
    query = torch.tensor(AQE_QUERY[0], dtype=torch.float32)
    assert [i for i, _ in gallery.search(query, 2, "own")] == [1, 2]
    assert gallery.search(query, 2, "own", rerank="none") == gallery.search(query, 2, "own")
    found = gallery.search(query, 4, "own", rerank="aqe")
    assert [i for i, _ in found] == [2, 3, 4, 1]
    cosine = gallery.embeddings @ query
    assert [s for _, s in found] == pytest.approx([float(cosine[i]) for i in (2, 3, 4, 1)])  # still the cosine
    assert gallery.search(query, 2, rerank="aqe")[0][0] == 0  # not skipped: the copy itself comes first
    assert gallery.search(query, 9, "own", rerank="k-reciprocal")[0][0] != 0
    assert len(gallery.search(query, 9, "own", rerank="k-reciprocal")) == 4


def test_gallery_search_k_reciprocal_is_the_re_ranked_order_of_the_rest():
    x = clustered(10, 4, dim=16, seed=5)
    gallery = gallery_of(x, [f"d{i}" if i != 7 else "own" for i in range(len(x))])
    query = torch.tensor(x[7] + 0.01, dtype=torch.float32)
    rest = torch.tensor([i for i in range(len(x)) if i != 7])
    distance = k_reciprocal_rerank(query[None], gallery.embeddings[rest])[0]
    found = gallery.search(query, 5, "own", rerank="k-reciprocal")
    assert [i for i, _ in found] == rest[torch.argsort(distance)[:5]].tolist()
    assert [i for i, _ in found] != [i for i, _ in gallery.search(query, 5, "own")]  # re-ranking did reorder
    with pytest.raises(ValueError, match="unknown re-ranking"):
        gallery.search(query, 5, rerank="fast")
