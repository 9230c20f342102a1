"""A searchable gallery: images with their metadata, embeddings and attention maps, cached per model
as safetensors and rebuilt when the model or the images change.

A cache file is trusted only after it verifies: its metadata names the model fingerprint, a digest of the
items and a sha256 of its tensors' bytes, and the tensors have the gallery's shapes. Anything else (a
truncated file, changed numbers, another model's cache) is logged as a warning and rebuilt. The cache
folder is bounded in size: the least recently used files go first."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import torch

from .data.two_camera import parse_name
from .images import ImageError
from .io import atomic_save_safetensors
from .rerank import check_method, rerank_similarity
from .uploads import IMAGE_SUFFIXES

__all__ = ["GalleryItem", "Gallery", "file_digest", "model_fingerprint", "items_from_folder",
           "CACHE_FORMAT", "DEFAULT_CACHE_BYTES"]

log = logging.getLogger(__name__)
CACHE_FORMAT = "rnnha-gallery/2"
DEFAULT_CACHE_BYTES = 512 * 2**20


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
              progress: Callable[[float, str], None] | None = None,
              cache_bytes: int = DEFAULT_CACHE_BYTES) -> "Gallery":
        """Embed every item, or read this model's cache of these items once it verifies. cache_bytes
        bounds the cache folder (least recently used files are removed first)."""
        items = list(items)
        items_digest = hashlib.sha256("".join(i.digest for i in items).encode()).hexdigest()
        key = hashlib.sha256((predictor.fingerprint + items_digest).encode()).hexdigest()
        cache = Path(cache_dir) / f"gallery-{key[:24]}.safetensors" if cache_dir else None
        expected = {"format": CACHE_FORMAT, "model": predictor.fingerprint, "items": items_digest,
                    "count": str(len(items))}
        if cache is not None and cache.is_file():
            gallery = cls._read_cache(cache, items, expected)
            if gallery is not None:
                return gallery
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
            tensors = {"embeddings": gallery.embeddings.contiguous(), "attention": gallery.attention.contiguous()}
            atomic_save_safetensors(tensors, cache, {**expected, "sha256": _tensors_sha256(tensors)})
            evict_least_recently_used(cache.parent, cache_bytes, keep=cache)
        return gallery

    @classmethod
    def _read_cache(cls, cache: Path, items: list[GalleryItem], expected: dict) -> "Gallery | None":
        """The cached gallery if the file verifies, else None (with a warning saying why)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(cache), "pt") as f:
                metadata = f.metadata() or {}
            tensors = load_file(str(cache))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            log.warning("gallery cache %s is unreadable (%s); rebuilding it", cache.name, exc)
            return None
        wrong = [k for k, v in expected.items() if metadata.get(k) != v]
        if not wrong and set(tensors) == {"embeddings", "attention"} and \
                metadata.get("sha256") != _tensors_sha256(tensors):
            wrong = ["sha256"]
        if not wrong:
            e, a = tensors["embeddings"], tensors["attention"]
            if e.dim() != 2 or a.dim() != 3 or len(e) != len(items) or len(a) != len(items):
                wrong = ["shapes"]
        if wrong:
            log.warning("gallery cache %s does not verify (%s); rebuilding it", cache.name, ", ".join(wrong))
            return None
        os.utime(cache)  # most recently used
        return cls(items, tensors["embeddings"], tensors["attention"])

    @cached_property
    def _by_digest(self) -> dict[str, list[int]]:
        """The items of each file content, so that excluding the query's own image looks it up."""
        found: dict[str, list[int]] = {}
        for i, item in enumerate(self.items):
            found.setdefault(item.digest, []).append(i)
        return found

    def search(self, query: torch.Tensor, k: int = 5, exclude_digest: str | None = None,
               rerank: str | None = None) -> list[tuple[int, float]]:
        """Top-k (index, cosine similarity), best first; an identical image (same bytes) is skipped.

        rerank="k-reciprocal" or "aqe" orders them by that re-ranking instead (rnnha.rerank), of the
        gallery less the skipped images; the similarity given stays the cosine, so it is not sorted
        then. k-reciprocal compares every gallery image with every other on each call: its time grows
        with the gallery's size squared, and it refuses galleries above rnnha.rerank.MAX_IMAGES."""
        scores = (self.embeddings @ query.to(self.embeddings.dtype)).nan_to_num(nan=float("-inf"))
        own = self._by_digest.get(exclude_digest, []) if exclude_digest else []
        if rerank not in (None, "none"):
            return self._reranked(query, scores, k, own, rerank)
        if own:
            scores[own] = float("-inf")
        values, indices = scores.topk(min(k, len(scores) - len(own)))
        return [(int(i), float(v)) for v, i in zip(values, indices)]

    def _reranked(self, query: torch.Tensor, scores: torch.Tensor, k: int, own: list[int],
                  rerank: str) -> list[tuple[int, float]]:
        check_method(rerank)  # an unknown name fails even when nothing is left to rank
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[own] = False
        rows = keep.nonzero()[:, 0]  # the gallery that is searched; its row i is item rows[i]
        if not len(rows):
            return []
        reranked = rerank_similarity(query[None], self.embeddings[rows], rerank)[0]
        top = reranked.nan_to_num(nan=float("-inf")).topk(min(k, len(rows))).indices
        return [(int(rows[i]), float(scores[rows[i]])) for i in top]


def _tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def evict_least_recently_used(folder: str | Path, max_bytes: int, keep: Path | None = None,
                              pattern: str = "gallery-*.safetensors") -> list[Path]:
    """Remove the least recently used files (by modification time, which a cache hit refreshes) until
    the folder's matching files take at most max_bytes; `keep` is never removed. Returns the removed."""
    files = []
    for path in Path(folder).glob(pattern):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    total, removed = sum(size for _, size, _ in files), []
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed
