"""Attention maps drawn over images: the h x w map upsampled bilinearly to the image, a perceptual
matplotlib colormap, blended over the RGB pixels; a colorbar legend to go with it."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

__all__ = ["upsample", "colorize", "attention_overlay", "colorbar"]


def upsample(attention: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """h x w map -> H x W (size = (width, height), as PIL), bilinear, scaled to [0, 1] (min-max)."""
    a = torch.as_tensor(np.asarray(attention, dtype=np.float32))
    if a.dim() != 2:
        raise ValueError(f"an attention map is h x w, got shape {tuple(a.shape)}")
    width, height = size
    up = F.interpolate(a[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    low, high = float(up.min()), float(up.max())
    return ((up - low) / (high - low) if high > low else torch.zeros_like(up)).numpy()


def colorize(values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """[0, 1] values -> uint8 RGB through a matplotlib colormap."""
    from matplotlib import colormaps

    try:
        colormap = colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; try inferno, viridis, magma or jet") from None
    return (colormap(values)[..., :3] * 255).astype(np.uint8)


def attention_overlay(image: Image.Image, attention, alpha: float = 0.5, cmap: str = "inferno",
                      raw: bool = False) -> Image.Image:
    """The map blended over the image (same size as the image); raw=True gives the colored map alone."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = image.convert("RGB")
    colored = colorize(upsample(attention, image.size), cmap)
    if raw:
        return Image.fromarray(colored)
    blended = (1 - alpha) * np.asarray(image, dtype=np.float32) + alpha * colored.astype(np.float32)
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def colorbar(cmap: str = "inferno", width: int = 256, height: int = 36) -> Image.Image:
    """A horizontal legend: low attention on the left, high on the right."""
    strip = colorize(np.tile(np.linspace(0, 1, width), (height - 16, 1)), cmap)
    legend = Image.new("RGB", (width, height), "white")
    legend.paste(Image.fromarray(strip), (0, 0))
    draw = ImageDraw.Draw(legend)
    draw.text((2, height - 14), "low attention", fill="black")
    draw.text((width - 74, height - 14), "high attention", fill="black")
    return legend
