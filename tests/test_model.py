"""rnnha/model.py against an independent re-computation of the paper's equations."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rnnha import IGNORE_INDEX, RNNHA, RNNHAConfig, hierarchical_loss
from rnnha.model import RNNHAHead

torch.manual_seed(0)
B, D, H, W, HID = 3, 8, 3, 4, 6


def gru_by_hand(cell: torch.nn.GRUCell, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Eq. 1-4 written out (PyTorch's gate layout: reset, update, new)."""
    wr, wz, wn = cell.weight_ih.chunk(3)
    ur, uz, un = cell.weight_hh.chunk(3)
    br, bz, bn = cell.bias_ih.chunk(3)
    cr, cz, cn = cell.bias_hh.chunk(3)
    r = torch.sigmoid(x @ wr.T + br + h @ ur.T + cr)
    z = torch.sigmoid(x @ wz.T + bz + h @ uz.T + cz)
    n = torch.tanh(x @ wn.T + bn + r * (h @ un.T + cn))
    return (1 - z) * n + z * h


def attend_by_hand(f: torch.Tensor, w: torch.Tensor, eps: float):
    Bf, d, h, wd = f.shape
    cells = f.permute(0, 2, 3, 1).reshape(Bf, h * wd, d)  # f_ij as rows
    s = torch.log1p(torch.exp(torch.bmm(cells, w.unsqueeze(2)).squeeze(2)))  # softplus
    a = (s + eps) / (s + eps).sum(dim=1, keepdim=True)
    x = (a.unsqueeze(2) * cells).sum(dim=1) / (h * wd)
    return x, a.reshape(Bf, h, wd)


def make_head(**kw) -> RNNHAHead:
    config = RNNHAConfig(num_classes=kw.pop("num_classes", [4, 5]),
                         level_names=kw.pop("level_names", ["model", "vehicle"]), hidden_size=HID, **kw)
    return RNNHAHead(config, D).double().eval()


def test_two_steps_match_the_equations():
    head = make_head()
    f = torch.randn(B, D, H, W, dtype=torch.double)
    out = head(f)
    assert head.config.epsilon == 0.1
    x1 = f.mean(dim=(2, 3))
    o1 = gru_by_hand(head.gru, x1, torch.zeros(B, HID, dtype=torch.double))  # zero h0
    t = head.transformers[0]
    w = t.fc2(torch.relu(t.fc1(o1)))
    x2, a = attend_by_hand(f, w, 0.1)
    o2 = gru_by_hand(head.gru, x2, o1)  # the same GRU, hidden state carried
    torch.testing.assert_close(out.outputs[0], o1)
    torch.testing.assert_close(out.attention, a)
    torch.testing.assert_close(out.attention.sum(dim=(1, 2)), torch.ones(B, dtype=torch.double))
    torch.testing.assert_close(out.outputs[1], o2)
    torch.testing.assert_close(out.logits[0], head.classifiers[0](o1))
    torch.testing.assert_close(out.logits[1], head.classifiers[1](o2))
    torch.testing.assert_close(out.embedding, (o2 / o2.norm(dim=1, keepdim=True)).float())
    assert sum(1 for m in head.modules() if isinstance(m, torch.nn.GRUCell)) == 1


@pytest.mark.parametrize("eps", [0.1, 0.0, 2.0])
def test_epsilon_enters_the_normalisation(eps):
    head = make_head(epsilon=eps)
    f = torch.randn(B, D, H, W, dtype=torch.double)
    w = torch.randn(B, D, dtype=torch.double)
    x, a = head.attend(f, w)
    x_ref, a_ref = attend_by_hand(f, w, eps)
    torch.testing.assert_close(a, a_ref)
    torch.testing.assert_close(x, x_ref)


def test_sum_pool_is_the_attention_weighted_average():
    """attention_pool="sum" drops Eq. 9's 1/(hw): x2 is then on GAP(f)'s scale (uniform a gives GAP)."""
    head = make_head(attention_pool="sum")
    f = torch.randn(B, D, H, W, dtype=torch.double)
    w = torch.randn(B, D, dtype=torch.double)
    x, a = head.attend(f, w)
    x_ref, a_ref = attend_by_hand(f, w, 0.1)
    torch.testing.assert_close(a, a_ref)
    torch.testing.assert_close(x, x_ref * H * W)
    x_flat, _ = head.attend(f, torch.zeros(B, D, dtype=torch.double))  # every s_ij equal: a = 1/(hw)
    torch.testing.assert_close(x_flat, f.mean(dim=(2, 3)))


def test_neck_normalises_o_t_before_the_classifiers():
    head = make_head(neck=True)
    for neck in head.necks:  # statistics and scale away from their initial 0 / 1
        neck.running_mean.uniform_(-0.5, 0.5), neck.running_var.uniform_(0.5, 2.0), neck.weight.data.uniform_(0.5, 2.0)
    f = torch.randn(B, D, H, W, dtype=torch.double)
    out = head(f)
    o1, o2 = out.outputs  # the GRU's outputs; guidance still reads o1 itself
    t = head.transformers[0]
    x2, _ = attend_by_hand(f, t.fc2(torch.relu(t.fc1(o1))), 0.1)
    torch.testing.assert_close(o2, gru_by_hand(head.gru, x2, o1))
    for level, o in enumerate((o1, o2)):
        neck = head.necks[level]
        bn = (o - neck.running_mean) / torch.sqrt(neck.running_var + neck.eps) * neck.weight
        torch.testing.assert_close(out.logits[level], head.classifiers[level](bn))
        assert head.classifiers[level].bias is None and not neck.bias.requires_grad
    torch.testing.assert_close(out.embedding, F.normalize(bn, dim=1).float())  # BN(o2), the last level's


def test_epsilon_floors_the_weights():
    head = make_head()
    f = torch.zeros(1, D, H, W, dtype=torch.double)
    f[0, :, 0, 0] = 50.0  # one cell scores huge, the rest softplus(0) = ln 2
    _, a = head.attend(f, torch.ones(1, D, dtype=torch.double))
    s_big = F.softplus(torch.tensor(400.0, dtype=torch.double))
    total = s_big + 0.1 + (H * W - 1) * (torch.log(torch.tensor(2.0, dtype=torch.double)) + 0.1)
    torch.testing.assert_close(a[0, 1, 1], (torch.log(torch.tensor(2.0, dtype=torch.double)) + 0.1) / total)


def test_rnn_h_ablation_reads_gap_twice():
    head = make_head(attention=False)
    assert head.config.variant == "RNN-H" and not hasattr(head, "transformers")
    f = torch.randn(B, D, H, W, dtype=torch.double)
    out = head(f)
    gap = f.mean(dim=(2, 3))
    o1 = gru_by_hand(head.gru, gap, torch.zeros(B, HID, dtype=torch.double))
    torch.testing.assert_close(out.outputs[1], gru_by_hand(head.gru, gap, o1))
    torch.testing.assert_close(out.attention, torch.full((B, H, W), 1 / (H * W), dtype=torch.double))
    assert out.attentions == []


def test_fc_ha_ablation_has_no_recurrence():
    head = make_head(recurrent="fc")
    assert head.config.variant == "FC-HA" and not hasattr(head, "gru")
    f = torch.randn(B, D, H, W, dtype=torch.double)
    out = head(f)
    o1 = torch.relu(head.fc_steps[0].fc(f.mean(dim=(2, 3))))
    t = head.transformers[0]
    x2, a = attend_by_hand(f, t.fc2(torch.relu(t.fc1(o1))), 0.1)
    torch.testing.assert_close(out.outputs[0], o1)
    torch.testing.assert_close(out.attention, a)
    torch.testing.assert_close(out.outputs[1], torch.relu(head.fc_steps[1].fc(x2)))


def test_three_levels_attend_with_the_previous_step():
    head = make_head(num_classes=[3, 4, 5], level_names=["type", "model", "vehicle"])
    f = torch.randn(B, D, H, W, dtype=torch.double)
    out = head(f)
    assert [l.shape[1] for l in out.logits] == [3, 4, 5] and len(out.attentions) == 2
    o = gru_by_hand(head.gru, f.mean(dim=(2, 3)), torch.zeros(B, HID, dtype=torch.double))
    for step, transformer in enumerate(head.transformers):
        x, a = attend_by_hand(f, transformer.fc2(torch.relu(transformer.fc1(o))), 0.1)
        torch.testing.assert_close(out.attentions[step], a)
        o = gru_by_hand(head.gru, x, o)
        torch.testing.assert_close(out.outputs[step + 1], o)
    torch.testing.assert_close(out.attention, out.attentions[-1])


def test_missing_labels_contribute_nothing():
    torch.manual_seed(1)
    logits = [torch.randn(4, 3, requires_grad=True), torch.randn(4, 5, requires_grad=True)]
    labels = torch.tensor([[IGNORE_INDEX, 1], [IGNORE_INDEX, 2], [IGNORE_INDEX, 0], [IGNORE_INDEX, 4]])
    total, (coarse, fine) = hierarchical_loss(logits, labels)
    assert coarse.item() == 0.0
    torch.testing.assert_close(total, F.cross_entropy(logits[1], labels[:, 1]))
    total.backward()
    assert torch.all(logits[0].grad == 0) and torch.isfinite(logits[1].grad).all()
    partial = torch.tensor([[2, 1], [IGNORE_INDEX, 2], [0, 0], [IGNORE_INDEX, 4]])
    _, (coarse, _) = hierarchical_loss([l.detach() for l in logits], partial)
    torch.testing.assert_close(coarse, F.cross_entropy(logits[0].detach()[[0, 2]], torch.tensor([2, 0])))


def test_labels_must_have_a_column_per_level():
    with pytest.raises(ValueError, match="one column per level"):
        hierarchical_loss([torch.randn(2, 3), torch.randn(2, 4)], torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("level", [0, 1])
def test_each_loss_reaches_the_backbone(level):
    torch.manual_seed(0)
    model = RNNHA(RNNHAConfig(backbone="vgg_cnn_m_1024", num_classes=[3, 4], hidden_size=32))
    out = model(torch.randn(2, 3, 96, 96))
    labels = torch.full((2, 2), IGNORE_INDEX)
    labels[:, level] = torch.tensor([1, 2])
    total, _ = model.loss(out, labels)
    total.backward()
    conv1 = model.backbone.body.conv1.weight.grad
    assert conv1 is not None and conv1.abs().sum() > 0
    transformer_grad = model.head.transformers[0].fc1.weight.grad
    if level == 1:  # the fine loss trains the guidance; the coarse one cannot reach it
        assert transformer_grad.abs().sum() > 0
    else:
        assert transformer_grad is None or transformer_grad.abs().sum() == 0


def test_aux_classifier_supervises_the_backbone_in_training_only():
    """Deep supervision: CE of the coarse level on BN(GAP(f)) joins the loss; at test time it is absent."""
    torch.manual_seed(0)
    model = RNNHA(RNNHAConfig(backbone="vgg_cnn_m_1024", num_classes=[3, 4], hidden_size=32, neck=True,
                              aux_classifier=True))
    images, labels = torch.randn(4, 3, 96, 96), torch.tensor([[0, 1], [2, IGNORE_INDEX], [IGNORE_INDEX, 3], [1, 0]])
    out = model(images)
    gap = model.backbone(images).mean(dim=(2, 3))
    torch.testing.assert_close(out.aux_logits, model.head.aux_classifier(model.head.aux_neck(gap)))
    total, per_level = model.loss(out, labels)
    aux = F.cross_entropy(out.aux_logits[[0, 1, 3]], labels[[0, 1, 3], 0])
    torch.testing.assert_close(total, sum(per_level) + aux)
    aux.backward()  # the auxiliary loss alone reaches the backbone and its own classifier, not the GRU
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0
    assert model.head.aux_classifier.weight.grad.abs().sum() > 0 and model.head.gru.weight_ih.grad is None
    model.eval()
    with torch.no_grad():
        assert model(images).aux_logits is None
    with pytest.raises(ValueError, match="aux_classifier is for head 'rnnha'"):
        RNNHAConfig(head="bnneck", num_classes=[3], level_names=["vehicle"], aux_classifier=True)


def test_config_round_trips_through_json(tmp_path):
    config = RNNHAConfig(backbone="resnet50", num_classes=[3, 7, 9], level_names=["type", "model", "id"],
                         hidden_size=512, recurrent="fc", attention=False, input_size=[256, 128],
                         class_names=[["a", "b", "c"], [str(i) for i in range(7)], list("abcdefghi")])
    assert RNNHAConfig.from_json(config.to_json()) == config
    path = tmp_path / "config.json"
    config.to_json(path)
    assert RNNHAConfig.from_json(path) == config
    assert json.loads(path.read_text())["num_classes"] == [3, 7, 9]
    assert RNNHAConfig.from_dict(RNNHAConfig().to_dict()) == RNNHAConfig()


@pytest.mark.parametrize("bad, message", [
    ({"num_classes": [5]}, "at least two levels"),
    ({"level_names": ["a"]}, "must name each"),
    ({"recurrent": "lstm"}, "'gru' or 'fc'"),
    ({"backbone": "alexnet"}, "unknown backbone 'alexnet'"),
    ({"class_names": [["a"], ["b"]]}, "do not match num_classes"),
])
def test_bad_configs_say_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        RNNHAConfig(**bad)


def test_unknown_config_field_is_named():
    with pytest.raises(ValueError, match="unknown RNNHAConfig fields \\['hiden_size'\\]"):
        RNNHAConfig.from_dict({"hiden_size": 3})


def test_default_config_builds_a_working_model():
    model = RNNHA().eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 224, 224))
    assert [l.shape for l in out.logits] == [torch.Size([1, 10]), torch.Size([1, 100])]
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(1))
    assert out.attention.shape == (1, 7, 7)


def test_bnneck_baseline_untrained_is_the_gap_feature():
    model = RNNHA(RNNHAConfig(backbone="vgg_cnn_m_1024", head="bnneck", num_classes=[7],
                              level_names=["vehicle"])).eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        out = model(images)
        gap = model.backbone(images).mean(dim=(2, 3))
    assert model.config.variant == "BN-neck baseline" and model.embedding_dim == 512
    torch.testing.assert_close(out.embedding, F.normalize(gap, dim=1), rtol=1e-4, atol=1e-5)  # zero-shot
    assert [l.shape for l in out.logits] == [torch.Size([2, 7])]
    torch.testing.assert_close(out.attention.sum(dim=(1, 2)), torch.ones(2))
    with pytest.raises(ValueError, match="at least two levels"):
        RNNHAConfig(num_classes=[7], level_names=["vehicle"])  # RNN-HA itself needs a coarse level


@pytest.mark.parametrize("bias", [True, False])
def test_gru_from_zero_is_the_cell_at_a_zero_state(bias):
    """Step 1 skips the hidden-to-hidden product of h_0 = 0; the result is the cell's own."""
    from rnnha.model import gru_from_zero

    cell = torch.nn.GRUCell(D, HID, bias=bias).double()
    x = torch.randn(B, D, dtype=torch.double)
    torch.testing.assert_close(gru_from_zero(cell, x), cell(x, torch.zeros(B, HID, dtype=torch.double)))
