"""rnnha/backbones.py: shapes, the offline ImageNet weights, the registry."""
from __future__ import annotations

import csv

import pytest
import torch

from rnnha.backbones import (BackboneError, create_backbone, efficientnet_lite_classifier,
                             get_backbone_spec, list_backbones)
from rnnha.transforms import eval_transform, resolve_preprocessing

EXPECTED = {  # name: (d, h x w at 224, h x w at 256)
    "resnet50": (2048, (7, 7), (8, 8)),
    "vgg_cnn_m_1024": (512, (6, 6), (7, 7)),  # Caffe's ceil-mode pooling: fc6 reads 6 x 6 at 224
    "efficientnet_lite0": (1280, (7, 7), (8, 8)),
    "efficientnet_lite1": (1280, (7, 7), (8, 8)),
    "efficientnet_lite2": (1280, (7, 7), (8, 8)),
}

# ImageNet-1k classes that are road vehicles (car parts such as 'grille' or 'car wheel' do not count)
VEHICLE_CLASSES = {
    "sports car", "convertible", "cab", "pickup", "minivan", "limousine", "beach wagon", "jeep",
    "racer", "Model T", "ambulance", "police van", "moving van", "minibus", "tow truck", "trailer truck",
    "go-kart", "golfcart", "fire engine", "garbage truck", "school bus", "trolleybus", "recreational vehicle",
}


def test_registry_lists_every_backbone():
    assert set(EXPECTED) <= set(list_backbones())
    with pytest.raises(BackboneError, match="unknown backbone 'vgg16'"):
        create_backbone("vgg16")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_feature_map_shape(name):
    d, at224, at256 = EXPECTED[name]
    net = create_backbone(name).eval()
    assert net.feature_dim == d == get_backbone_spec(name).feature_dim
    with torch.inference_mode():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, d, *at224)
        assert net(torch.randn(1, 3, 256, 256)).shape == (1, d, *at256)
        assert net(torch.randn(1, 3, 672, 336)).shape[2:] == (net(torch.randn(1, 3, 672, 336)).shape[2:])


def test_vgg_m_has_no_bundled_weights():
    with pytest.raises(BackboneError, match="python -m rnnha.caffe VGG_CNN_M_1024.caffemodel"):
        create_backbone("vgg_cnn_m_1024", pretrained=True)


def test_vgg_m_loads_converted_weights(tmp_path):
    from safetensors.torch import save_file

    from rnnha.backbones import load_vgg_cnn_m_1024_weights

    source = create_backbone("vgg_cnn_m_1024")
    state = {k: v.clone() for k, v in source.body.state_dict().items()}
    save_file(state, str(tmp_path / "vggm.safetensors"))
    target = create_backbone("vgg_cnn_m_1024")
    load_vgg_cnn_m_1024_weights(target, tmp_path / "vggm.safetensors", bgr=True)
    torch.testing.assert_close(target.body.conv1.weight, state["conv1.weight"].flip(1))
    torch.testing.assert_close(target.body.conv5.weight, state["conv5.weight"])
    save_file({"conv1.weight": state["conv1.weight"]}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(BackboneError, match="does not fit vgg_cnn_m_1024"):
        load_vgg_cnn_m_1024_weights(target, tmp_path / "partial.safetensors")


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_weights_load_strictly(variant):
    net = efficientnet_lite_classifier(variant, pretrained=True)  # strict=True inside
    fresh = efficientnet_lite_classifier(variant, pretrained=False)
    assert not torch.equal(net.conv_stem.weight, fresh.conv_stem.weight)
    assert net.bn2.running_var.mean() != 1.0  # real statistics, not the init


def test_lite0_imagenet_head_sees_vehicles_in_stanford_cars(cars_root):
    from PIL import Image
    from timm.data import ImageNetInfo
    from torchvision.transforms import v2 as T

    info = ImageNetInfo()
    rows = list(csv.DictReader(open(cars_root / "labels.csv", newline="")))[:50]
    spec = get_backbone_spec("efficientnet_lite0")
    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                    T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std)])
    batch = torch.stack([tf(Image.open(cars_root / r["path"]).convert("RGB")) for r in rows])
    net = efficientnet_lite_classifier(0, pretrained=True).eval()
    with torch.inference_mode():
        top1 = net(batch).argmax(dim=1).tolist()
    names = [info.index_to_description(i) for i in top1]
    hits = sum(any(v == n.split(",")[0].strip() for v in VEHICLE_CLASSES) for n in names)
    assert hits >= 45, f"only {hits}/50 in vehicle classes: {names}"


def test_preprocessing_follows_the_backbone():
    from rnnha import RNNHAConfig

    lite = resolve_preprocessing(RNNHAConfig())
    assert lite.size == (224, 224) and lite.mean == (0.5,) * 3 and lite.interpolation == "bicubic"
    resnet = resolve_preprocessing(RNNHAConfig(backbone="resnet50", input_size=[672, 672]))
    assert resnet.size == (672, 672) and resnet.mean == (0.485, 0.456, 0.406)
    from PIL import Image

    x = eval_transform(RNNHAConfig(input_size=[256, 128]))(Image.new("RGB", (300, 200), (255, 0, 0)))
    assert x.shape == (3, 256, 128)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


@pytest.mark.parametrize("name, k", [("efficientnet_lite0", 4), ("resnet50", 2), ("vgg_cnn_m_1024", 3)])
def test_freezing_stages_fixes_weights_and_bn_statistics(name, k):
    net = create_backbone(name)
    net.freeze(k)
    frozen = [p for stage in net.stages[:k] for p in stage.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for stage in net.stages[k:] for p in stage.parameters())
    bns = [m for stage in net.stages[:k] for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in bns]
    net.train()
    assert all(not bn.training for bn in bns)
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns))
    with pytest.raises(BackboneError, match="cannot freeze"):
        net.freeze(len(net.stages) + 1)
