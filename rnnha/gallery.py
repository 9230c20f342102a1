"""A searchable gallery: images with their metadata, embeddings and attention maps, cached per model
as safetensors and rebuilt when the model or the images change."""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .data.two_camera import parse_name
from .images import ImageError, load_image
from .io import atomic_save_safetensors

__all__ = ["GalleryItem", "Gallery", "file_digest", "model_fingerprint", "items_from_folder", "items_from_uploads",
           "IMAGE_SUFFIXES", "MAX_UPLOAD_IMAGES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MAX_UPLOAD_IMAGES = 2000


def file_digest(data: bytes) -> str:
    """sha1 of a file's bytes: the gallery cache key and the "same image" test."""
    return hashlib.sha1(data).hexdigest()


@dataclass(frozen=True)
class GalleryItem:
    path: Path
    vehicle: str | None = None  # identity, when the name tells it (<type>_<id>_cam<k>.jpg)
    camera: str | None = None
    digest: str = ""  # file_digest of the file's bytes

    @classmethod
    def from_path(cls, path: Path) -> "GalleryItem":
        parsed = parse_name(path.name) or {}
        return cls(path, parsed.get("vehicle"), parsed.get("camera"), file_digest(path.read_bytes()))


def items_from_folder(folder: str | Path) -> list[GalleryItem]:
    folder = Path(folder)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageError(f"no images under {folder}")
    return [GalleryItem.from_path(p) for p in paths]


def items_from_uploads(paths: Sequence[str | Path], workdir: str | Path) -> tuple[list[GalleryItem], list[str]]:
    """Uploaded images and/or zip files -> items (zip members are copied into workdir; nothing is
    extracted by the archive's own paths). Returns the items and a note per file skipped."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    items, skipped = [], []

    def add(name: str, data: bytes) -> None:
        if len(items) >= MAX_UPLOAD_IMAGES:
            raise ImageError(f"a gallery holds at most {MAX_UPLOAD_IMAGES} images; upload fewer")
        try:
            load_image(data)
        except ImageError as exc:
            skipped.append(f"{name}: {exc}")
            return
        digest = file_digest(data)
        target = workdir / digest[:12] / Path(name).name  # the user's own file name, shown in the app
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
        parsed = parse_name(Path(name).name) or {}
        items.append(GalleryItem(target, parsed.get("vehicle"), parsed.get("camera"), digest))

    for path in map(Path, paths):
        if path.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(path) as archive:
                    for info in archive.infolist():
                        if not info.is_dir() and Path(info.filename).suffix.lower() in IMAGE_SUFFIXES:
                            add(info.filename, archive.read(info))
            except zipfile.BadZipFile:
                skipped.append(f"{path.name}: not a readable zip file")
        else:
            add(path.name, path.read_bytes())
    if not items:
        raise ImageError("none of the uploaded files is a usable image: " + "; ".join(skipped[:3]))
    return items, skipped


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the weights and the config: a gallery cache is valid for exactly one model."""
    from .checkpoint import weights_sha256

    config = json.dumps(model.config.to_dict(), sort_keys=True)
    return hashlib.sha256((config + weights_sha256(model)).encode()).hexdigest()


@dataclass
class Gallery:
    items: list[GalleryItem]
    embeddings: torch.Tensor  # N x D, unit norm
    attention: torch.Tensor  # N x h x w

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def build(cls, predictor, items: Sequence[GalleryItem], cache_dir: str | Path | None = None,
              progress: Callable[[float, str], None] | None = None) -> "Gallery":
        """Embed every item (or read the cache of this model and these images)."""
        items = list(items)
        key = hashlib.sha256((predictor.fingerprint + "".join(i.digest for i in items)).encode()).hexdigest()
        cache = Path(cache_dir) / f"gallery-{key[:24]}.safetensors" if cache_dir else None
        if cache is not None and cache.is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(cache))
            return cls(items, tensors["embeddings"], tensors["attention"])
        embeddings, attention = [], []
        step = predictor.batch_size
        for start in range(0, len(items), step):
            if progress:
                progress(start / len(items), f"embedding images {start + 1}-{min(start + step, len(items))} of {len(items)}")
            batch = predictor.predict([i.path for i in items[start:start + step]], topk=1)
            embeddings += [p.embedding for p in batch]
            attention += [p.attention for p in batch]
        gallery = cls(items, torch.stack(embeddings), torch.stack(attention))
        if cache is not None:
            atomic_save_safetensors({"embeddings": gallery.embeddings, "attention": gallery.attention}, cache)
        return gallery

    def search(self, query: torch.Tensor, k: int = 5, exclude_digest: str | None = None) -> list[tuple[int, float]]:
        """Top-k (index, cosine similarity), best first; an identical image (same bytes) is skipped."""
        scores = self.embeddings @ query.float()
        if exclude_digest:
            for i, item in enumerate(self.items):
                if item.digest == exclude_digest:
                    scores[i] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        values, indices = scores.topk(k)
        return [(int(i), float(v)) for v, i in zip(values, indices)]


