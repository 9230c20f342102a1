"""rnnha/predictor.py: precision, batching, outputs."""
from __future__ import annotations

import pytest
import torch

from rnnha import RNNHA, RNNHAConfig
from rnnha.predictor import Predictor, cpu_supports_bf16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RNNHA(RNNHAConfig(pretrained_backbone=True, num_classes=[3, 5],
                             class_names=[["car", "truck", "bus"], list("abcde")]))


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no bf16 support (AVX-512 BF16 / AMX)")
def test_bf16_embeddings_match_fp32(model, khoa_root):
    images = sorted((khoa_root / "images").rglob("*.jpg"))[:16]
    fp32 = Predictor(model, device="cpu", dtype=torch.float32).embed(images)
    bf16 = Predictor(model, device="cpu", dtype=torch.bfloat16).embed(images)
    cosine = (fp32 * bf16).sum(dim=1)
    assert cosine.min() >= 0.99, cosine
    assert not torch.equal(fp32, bf16)  # autocast really ran in bf16


def test_predict_gives_named_top_k(model, khoa_pair):
    predictor = Predictor(model, device="cpu", batch_size=2)
    preds = predictor.predict(list(khoa_pair), topk=2)
    assert len(preds) == 3
    for p in preds:
        assert set(p.levels) == {"model", "vehicle"}
        labels = [name for name, _ in p.levels["model"]]
        assert len(labels) == 2 and set(labels) <= {"car", "truck", "bus"}
        probs = [prob for _, prob in p.levels["vehicle"]]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
        assert p.attention.shape == (7, 7) and abs(float(p.attention.sum()) - 1) < 1e-3
        assert abs(float(p.embedding.norm()) - 1) < 1e-4


def test_embed_accepts_paths_images_and_tensors(model, khoa_pair):
    from PIL import Image

    predictor = Predictor(model, device="cpu", dtype=torch.float32)
    from_paths = predictor.embed(list(khoa_pair))
    from_pil = predictor.embed([Image.open(p) for p in khoa_pair])
    from_tensor = predictor.embed(predictor.preprocess(list(khoa_pair)))
    torch.testing.assert_close(from_paths, from_pil)
    torch.testing.assert_close(from_paths, from_tensor)
    assert predictor.embed([]).shape == (0, 1024)


def test_flip_averages_embeddings_and_logits_with_the_mirror(model, khoa_pair):
    from rnnha.data.base import Sample
    from rnnha.evaluate import extract

    predictor = Predictor(model, device="cpu", dtype=torch.float32)
    samples = [Sample(path) for path in khoa_pair]
    batch = predictor.preprocess(list(khoa_pair))
    plain, mirror = predictor.forward(batch), predictor.forward(batch.flip(3))
    flipped = extract(predictor, samples, flip=True, workers=0)
    torch.testing.assert_close(flipped.embeddings, torch.nn.functional.normalize(
        plain.embedding + mirror.embedding, dim=1), rtol=1e-4, atol=1e-5)
    for t in range(2):
        torch.testing.assert_close(flipped.logits[t], (plain.logits[t] + mirror.logits[t]) / 2,
                                   rtol=1e-4, atol=1e-5)
    unflipped = extract(predictor, samples, workers=0)
    torch.testing.assert_close(unflipped.logits[0], plain.logits[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(flipped.logits[0], unflipped.logits[0])


def test_reduced_precision_runs_the_head_on_a_copy_cast_once():
    """bf16: the backbone under autocast, the head on a bf16 copy made once (autocast would re-cast its
    weights on every call); the model's own weights stay fp32 and the answer matches autocast's."""
    from rnnha import RNNHA, RNNHAConfig
    from rnnha.predictor import Predictor

    torch.manual_seed(0)
    model = RNNHA(RNNHAConfig(num_classes=[5, 7], hidden_size=64, input_size=64, neck=True))
    predictor = Predictor(model, device="cpu", dtype=torch.bfloat16)
    batch = torch.randn(3, 3, 64, 64)
    first, second = predictor.forward(batch), predictor.forward(batch)
    assert list(predictor._heads) == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    torch.testing.assert_close(first.embedding, second.embedding)
    whole = predictor.forward(batch, model)  # the whole model under autocast, as before
    assert float((first.embedding.float() * whole.embedding.float()).sum(1).min()) > 0.99
    with torch.no_grad():  # new weights (an optimizer step, load_state_dict ...): the copy follows them
        for p in model.head.parameters():
            p.mul_(-1.5)
    changed = predictor.forward(batch)
    assert not torch.allclose(changed.embedding.float(), first.embedding.float(), atol=1e-2)
    again = predictor.forward(batch, model)
    assert float((changed.embedding.float() * again.embedding.float()).sum(1).min()) > 0.99
    assert [l.shape for l in first.logits] == [(3, 5), (3, 7)] and first.attention.dtype == torch.float32


def test_a_small_cpu_runs_a_batch_one_image_at_a_time_with_the_same_outputs(model, khoa_root, monkeypatch):
    """The automatic fp32 on a CPU of <= 2 threads runs micro-batches (twice the images/s there): every
    output is the whole batch's, in order; many threads, or a precision set by hand, keep whole batches."""
    import rnnha.predictor as predictor_module

    images = sorted((khoa_root / "images").rglob("*.jpg"))[:5]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    small = Predictor(model, device="cpu")
    if small.dtype != torch.float32:
        pytest.skip("the automatic precision here is not fp32 (native bf16)")
    assert small.micro_batch == predictor_module.MICRO_BATCH
    whole = Predictor(model, device="cpu", dtype=torch.float32)
    assert whole.micro_batch is None
    batch = small.preprocess(images)
    parts, reference = small.forward(batch), whole.forward(batch)
    assert len(parts.logits) == len(reference.logits) == 2
    for mine, theirs in zip([parts.embedding, parts.attention, *parts.logits, *parts.attentions],
                            [reference.embedding, reference.attention, *reference.logits, *reference.attentions]):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine.float(), theirs.float(), rtol=2e-2, atol=2e-3)  # the head ran in fp16
    assert ((parts.embedding * reference.embedding).sum(1) > 0.99999).all()
    torch.testing.assert_close(small.forward(batch, model.backbone), whole.forward(batch, model.backbone),
                               rtol=1e-4, atol=1e-4)
    small.dtype = torch.float32  # set by hand: whole batches, as asked
    assert small.micro_batch is None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert Predictor(model, device="cpu").micro_batch is None
