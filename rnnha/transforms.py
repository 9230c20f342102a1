"""Per-backbone preprocessing, from the config: size, mean/std and interpolation (torchvision v2).

Re-identification resizes the whole crop to a fixed size (no centre crop: the vehicle fills the crop).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from .backbones import get_backbone_spec

__all__ = ["Preprocessing", "resolve_preprocessing", "eval_transform", "train_transform"]


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int]  # height, width
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str

    @property
    def mode(self) -> InterpolationMode:
        return InterpolationMode(self.interpolation)

    def to_dict(self) -> dict:
        return {"input_size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}


def resolve_preprocessing(config) -> Preprocessing:
    """The config's preprocessing, with the backbone's defaults where the config says None."""
    spec = get_backbone_spec(config.backbone)
    size = config.input_size if config.input_size is not None else spec.input_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"input_size must be a side or [height, width] of at least 32 px, got {size}")
    interpolation = config.interpolation or spec.interpolation
    try:
        InterpolationMode(interpolation)
    except ValueError:
        raise ValueError(f"unknown interpolation {interpolation!r}; use 'bilinear' or 'bicubic'") from None
    return Preprocessing(
        size=(int(size[0]), int(size[1])),
        mean=tuple(config.mean or spec.mean),
        std=tuple(config.std or spec.std),
        interpolation=interpolation,
    )


def _to_tensor(p: Preprocessing) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(p.mean, p.std)]


def eval_transform(config) -> T.Compose:
    """PIL RGB image -> normalised 3 x H x W float tensor."""
    p = resolve_preprocessing(config)
    return T.Compose([T.Resize(p.size, interpolation=p.mode, antialias=True), *_to_tensor(p)])


def train_transform(config, flip: float = 0.5, pad: int = 10, erasing: float = 0.5,
                    color_jitter: float = 0.0) -> T.Compose:
    """The field's re-id augmentation: resize, flip, pad + random crop, (jitter), random erasing."""
    p = resolve_preprocessing(config)
    steps = [T.Resize(p.size, interpolation=p.mode, antialias=True), T.RandomHorizontalFlip(flip)]
    if pad:
        steps += [T.Pad(pad), T.RandomCrop(p.size)]
    if color_jitter:
        steps.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += _to_tensor(p)
    if erasing:
        steps.append(T.RandomErasing(p=erasing, value=0))
    return T.Compose(steps)
