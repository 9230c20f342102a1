"""Galleries of a million images: their embeddings in a folder, searched with FAISS.

    python -m rnnha.index build SOURCE OUT [--model M] [--batch N] [--device D] [--exact-below N]
    python -m rnnha.index search OUT IMAGE... [--model M] [--k 5] [--json]
    python -m rnnha.index bench [--n 1000000] [--dim 1024] [--queries 100]   synthetic embeddings, no images
    torchrun --nproc_per_node G -m rnnha.index build SOURCE OUT ...         one process per GPU (or CPU share)

SOURCE is a folder of images (searched recursively) or a CSV file with a `path` column and optional
`vehicle` and `camera` columns (relative paths are relative to the CSV's folder). OUT is an index folder
(docs/index.md):

    manifest.json               format, model fingerprint and name, count, dim, dtype, index kind and parameters
    items.jsonl                 one line per image: path (relative to the manifest's root), vehicle, camera, digest
    shards/NNNNNN.safetensors   one chunk of images: embeddings and attention maps (fp16), its items
    faiss.index                 the FAISS index over the unit-norm float32 embeddings (inner product = cosine)

Every file is written atomically and the manifest last: a folder with a manifest is a complete index.
A build that stopped (even by SIGKILL) resumes: a shard that verifies (model fingerprint, count, the
digest of its images' paths and bytes, a checksum of its tensors) is kept, every other chunk is
embedded again. Under torchrun, rank r embeds the chunks c with c % world_size == r, and rank 0 builds
the FAISS index once all shards are written.

The FAISS index is exact (IndexFlatIP) below `exact_below` images and approximate above (HNSW, its
efSearch tuned at build time until recall@5 against exact search reaches 0.98 on a sample of the
gallery's own vectors; docs/index.md has the measurements behind the choice). FAISS is an optional
dependency (pip install "rnnha[index]"), imported when an index is built or opened, never when this
module is imported; the small built-in rnnha.gallery.Gallery does not need it.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .data.two_camera import parse_name
from .gallery import GalleryItem, _tensors_sha256, file_digest
from .images import MAX_FILE_BYTES, ImageError, load_image
from .io import TEMPORARY, atomic_path, atomic_save_safetensors, atomic_write_text
from .uploads import IMAGE_SUFFIXES

__all__ = ["FORMAT", "DEFAULT_CHUNK", "DEFAULT_EXACT_BELOW", "APPROXIMATE_KIND", "RECALL_TARGET", "MISSING_FAISS",
           "IndexFolderError", "FaissMissing", "import_faiss", "IndexGallery", "IndexItems", "build", "list_source",
           "read_manifest", "choose_kind", "make_faiss_index", "build_faiss_index", "configure", "exact_topk",
           "recall_at_k", "synthetic_embeddings", "main"]

log = logging.getLogger(__name__)

FORMAT = "rnnha-index/1"
SHARD_FORMAT = "rnnha-index-shard/1"
MANIFEST, ITEMS, INDEX_FILE, SHARDS = "manifest.json", "items.jsonl", "faiss.index", "shards"
DEFAULT_CHUNK = 2048  # images per shard: what a killed build loses at most
DEFAULT_EXACT_BELOW = 100_000  # exact search below this many images, approximate from there (docs/index.md)
APPROXIMATE_KIND = "hnsw"
KINDS = ("auto", "flat", "hnsw", "ivf")
RECALL_TARGET = 0.98  # recall@5 of the approximate index against exact search, tuned at build time
RECALL_K = 5
TUNING_QUERIES = 1000  # gallery vectors used as queries to tune the approximate index
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
BARRIER_TIMEOUT = timedelta(hours=float(os.environ.get("RNNHA_INDEX_BARRIER_HOURS", 24)))
MISSING_FAISS = 'FAISS is not installed: pip install "rnnha[index]" (faiss-cpu)'


class IndexFolderError(ValueError):
    """An index folder that cannot be used (missing, unfinished, damaged, another model's); the message
    says what to do."""


class FaissMissing(ImportError):
    """FAISS is not installed."""


def import_faiss():
    """The faiss module, or FaissMissing with the install command. Exhaustive search uses BLAS from 20
    queries on (faiss 1.15's default threshold, 128000, made 100 queries over 1M vectors 10x slower)."""
    try:
        import faiss
    except ImportError:
        raise FaissMissing(MISSING_FAISS) from None
    try:
        faiss.cvar.distance_compute_blas_threshold = 20
    except AttributeError:  # another faiss build: its own default
        pass
    return faiss


# --- what to index ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    path: str  # relative to the root (POSIX separators), or absolute as a CSV gave it
    vehicle: str | None = None
    camera: str | None = None


def _labels(name: str) -> tuple[str | None, str | None]:
    parsed = parse_name(name) or {}
    return parsed.get("vehicle"), parsed.get("camera")


def list_source(source: str | Path) -> tuple[Path, list[Record]]:
    """(root, records) of a folder of images (recursive, sorted; identities from <type>_<id>_cam<k> names)
    or of a CSV (column `path`, optional `vehicle`, `camera`; paths relative to the CSV's folder)."""
    source = Path(source)
    if source.is_dir():
        root = source.resolve()
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        records = [Record(p.relative_to(root).as_posix(), *_labels(p.name)) for p in paths]
    elif source.is_file() and source.suffix.lower() == ".csv":
        root = source.resolve().parent
        records = _read_csv(source)
    else:
        raise IndexFolderError(f"{source} is neither a folder of images nor a CSV file with a `path` column")
    if not records:
        raise IndexFolderError(f"no images in {source} (extensions {', '.join(sorted(IMAGE_SUFFIXES))})")
    return root, records


def _read_csv(path: Path) -> list[Record]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise IndexFolderError(f"{path.name} has no `path` column (columns: path, and optionally vehicle, camera)")
        records = []
        for line, row in enumerate(reader, 2):
            value = (row.get("path") or "").strip()
            if not value:
                raise IndexFolderError(f"{path.name} line {line}: the path is empty")
            value = Path(value).as_posix()
            vehicle, camera = _labels(Path(value).name)
            records.append(Record(value, (row.get("vehicle") or "").strip() or vehicle,
                                  (row.get("camera") or "").strip() or camera))
    return records


# --- shards: one chunk of images each, written atomically, verified on resume ---------------------------

def _shard_path(out: Path, chunk_index: int) -> Path:
    return out / SHARDS / f"{chunk_index:06d}.safetensors"


def _read_chunk(root: Path, records: Sequence[Record]) -> tuple[list[str], dict[int, str]]:
    """Each image's file digest ("" when unreadable; read in blocks, nothing kept), and why an image
    cannot be used."""
    digests, errors = [], {}
    for i, record in enumerate(records):
        path, digest = root / record.path, ""
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                errors[i] = f"{size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit"
            else:
                sha1 = hashlib.sha1()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        sha1.update(block)
                digest = sha1.hexdigest()  # = gallery.file_digest of the bytes
        except OSError as exc:
            errors[i] = f"unreadable ({exc.strerror or type(exc).__name__})"
        digests.append(digest)
    return digests, errors


def _chunk_key(records: Sequence[Record], digests: Sequence[str]) -> str:
    """sha256 of a chunk's paths, labels and file digests: a shard is valid for exactly these images."""
    digest = hashlib.sha256()
    for record, file in zip(records, digests):
        digest.update(json.dumps([record.path, record.vehicle, record.camera, file]).encode() + b"\n")
    return digest.hexdigest()


def _embed_chunk(predictor, root: Path, records: Sequence[Record], errors: dict[int, str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Embeddings and attention maps of a chunk's usable images (read and decoded a batch at a time),
    and which of the chunk's images they are; an image that does not decode is recorded in `errors`."""
    usable = [i for i in range(len(records)) if i not in errors]
    embeddings, attention, kept = [], [], []
    for start in range(0, len(usable), predictor.batch_size):
        images, which = [], []
        for i in usable[start:start + predictor.batch_size]:
            try:
                images.append(load_image(root / records[i].path))
                which.append(i)
            except ImageError as exc:
                errors[i] = str(exc)
        if images:
            predictions = predictor.predict(images, topk=1)
            embeddings += [p.embedding for p in predictions]
            attention += [p.attention for p in predictions]
            kept += which
    dim = int(predictor.model.embedding_dim)
    if not kept:
        return torch.zeros(0, dim), torch.zeros(0, 1, 1), []
    return torch.stack(embeddings), torch.stack(attention), kept


def _write_shard(path: Path, embeddings: torch.Tensor, attention: torch.Tensor, metadata: dict) -> None:
    tensors = {"embeddings": embeddings.to(torch.float16).contiguous(), "attention": attention.to(torch.float16).contiguous()}
    atomic_save_safetensors(tensors, path, {**metadata, "sha256": _tensors_sha256(tensors)})


def _open_shard(path: Path, expected: dict, dim: int) -> tuple[dict, dict] | None:
    """(metadata, tensors) of a shard that verifies against `expected` (metadata values), its checksum
    and its shapes; else None."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        if any(metadata.get(k) != v for k, v in expected.items()):
            return None
        tensors = load_file(str(path))
        count = int(metadata["count"])
        records = json.loads(metadata["records"])
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError):
        return None
    e, a = tensors.get("embeddings"), tensors.get("attention")
    if e is None or a is None or set(tensors) != {"embeddings", "attention"} or e.shape != (count, dim) \
            or a.dim() != 3 or len(a) != count or len(records) != count or metadata.get("sha256") != _tensors_sha256(tensors):
        return None
    return metadata, tensors


def _shard_expected(fingerprint: str, chunk_index: int, key: str | None = None) -> dict:
    expected = {"format": SHARD_FORMAT, "model": fingerprint, "chunk": str(chunk_index)}
    return {**expected, "items": key} if key is not None else expected


def _remove_own_temporaries(shards: Path, rank: int, world: int) -> None:
    """What a killed build left half-written: each rank removes the temporaries of its own chunks only
    (another rank may be writing its own meanwhile)."""
    prefix = TEMPORARY.split("{name}")[0]
    for tmp in shards.glob(TEMPORARY.format(name="*")):
        number = tmp.name[len(prefix):].split(".", 1)[0]
        if number.isdigit() and int(number) % world == rank:
            tmp.unlink(missing_ok=True)


# --- distributed (torchrun) ---------------------------------------------------------------------------

def _distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world_size, whether this call started the process group) from torchrun's variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    started = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT)
        started = True
    return dist.get_rank(), dist.get_world_size(), started


def _barrier(device: torch.device) -> None:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[device.index or 0])
    else:
        dist.barrier()


# --- build --------------------------------------------------------------------------------------------

def build(source: str | Path, out: str | Path, predictor, *, model_name: str | None = None,
          chunk: int = DEFAULT_CHUNK, kind: str = "auto", exact_below: int = DEFAULT_EXACT_BELOW,
          recall_target: float = RECALL_TARGET, progress: bool = True) -> dict:
    """Embed every image of `source` into shards under `out` (resuming from the shards that verify),
    then (rank 0) build the FAISS index and write the manifest. Returns the manifest."""
    import_faiss()  # before hours of embedding, not after
    if chunk < 1:
        raise IndexFolderError(f"the chunk size must be at least 1, got {chunk}")
    if kind not in KINDS:
        raise IndexFolderError(f"unknown index kind {kind!r}: one of {', '.join(KINDS)}")
    from tqdm import tqdm

    root, records = list_source(source)
    out = Path(out)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    rank, world, started = _distributed(predictor.device)
    try:
        chunks = math.ceil(len(records) / chunk)
        mine = range(rank, chunks, world)
        _remove_own_temporaries(out / SHARDS, rank, world)
        dim = int(predictor.model.embedding_dim)
        counts = {"embedded": 0, "kept": 0}
        bar = tqdm(total=sum(len(records[c * chunk:(c + 1) * chunk]) for c in mine), unit="img", position=rank,
                   desc="embedding" + (f" (rank {rank})" if world > 1 else ""), disable=not progress)
        for c in mine:
            part = records[c * chunk:(c + 1) * chunk]
            digests, errors = _read_chunk(root, part)
            key = _chunk_key(part, digests)
            path = _shard_path(out, c)
            if _open_shard(path, _shard_expected(predictor.fingerprint, c, key), dim) is not None:
                counts["kept"] += 1
            else:
                embeddings, attention, kept = _embed_chunk(predictor, root, part, errors)
                kept_records = [[part[i].path, part[i].vehicle, part[i].camera, digests[i]] for i in kept]
                skipped = [[part[i].path, reason] for i, reason in sorted(errors.items())]
                _write_shard(path, embeddings, attention, {
                    **_shard_expected(predictor.fingerprint, c, key), "count": str(len(kept)),
                    "start": str(c * chunk), "size": str(len(part)), "paths": _paths_digest(part),
                    "records": json.dumps(kept_records), "skipped": json.dumps(skipped)})
                counts["embedded"] += 1
            bar.update(len(part))
        bar.close()
        if world > 1:
            _barrier(predictor.device)  # every rank's shards are written
        if rank == 0:
            _assemble(out, source, root, records, chunk, predictor, model_name, kind, exact_below, recall_target,
                      progress, counts)
        if world > 1:
            _barrier(predictor.device)  # the manifest is written
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()
    return read_manifest(out)


def _paths_digest(records: Sequence[Record]) -> str:
    return hashlib.sha256("\n".join(r.path for r in records).encode()).hexdigest()


class _ShardVectors:
    """The shards' embeddings as unit-norm float32 chunks, read again from disk on every pass (the
    FAISS index, not a copy of the vectors, is what stays in memory)."""

    def __init__(self, files: list[Path], counts: list[int], dim: int):
        self.files, self.counts, self.n, self.dim = files, counts, int(sum(counts)), dim

    def chunks(self) -> Iterator[np.ndarray]:
        from safetensors.torch import safe_open

        for file, count in zip(self.files, self.counts):
            if count:
                with safe_open(str(file), "pt") as f:
                    yield _unit(f.get_tensor("embeddings").float().numpy())


def _assemble(out: Path, source, root: Path, records: list[Record], chunk: int, predictor, model_name, kind: str,
              exact_below: int, recall_target: float, progress: bool, counts: dict) -> None:
    """Rank 0, all shards written: check them, write items.jsonl and the FAISS index, then the manifest."""
    faiss = import_faiss()
    dim = int(predictor.model.embedding_dim)
    chunks = math.ceil(len(records) / chunk)
    files, sizes, items, skipped, keys, attention_shape = [], [], [], [], [], None
    for c in range(chunks):
        path = _shard_path(out, c)
        opened = _open_shard(path, _shard_expected(predictor.fingerprint, c), dim)
        part = records[c * chunk:(c + 1) * chunk]
        if opened is None or opened[0].get("paths") != _paths_digest(part):
            raise IndexFolderError(f"shard {path.name} is missing or does not verify; run the build again")
        metadata, tensors = opened
        files.append(path)
        sizes.append(int(metadata["count"]))
        items += json.loads(metadata["records"])
        skipped += json.loads(metadata["skipped"])
        keys.append(metadata["items"])
        if len(tensors["attention"]):
            attention_shape = list(tensors["attention"].shape[1:])
    for stale in (out / SHARDS).glob("*.safetensors"):  # chunks of an earlier, larger build
        if stale.stem.isdigit() and int(stale.stem) >= chunks:
            stale.unlink(missing_ok=True)
    if not items:
        raise IndexFolderError(f"none of the {len(records)} images could be read: {skipped[0][0]}: {skipped[0][1]}")
    for path, reason in skipped[:20]:
        log.warning("skipped %s: %s", path, reason)
    items_digest = hashlib.sha256("".join(keys).encode()).hexdigest()
    requested = {"kind": kind, "exact_below": exact_below, "recall_target": recall_target}
    try:
        previous = read_manifest(out)
        same = {"model": predictor.fingerprint, "model_name": model_name, "items_digest": items_digest,
                "requested": requested, "root": str(root)}
        if all(previous.get(k) == v for k, v in same.items()) and (out / INDEX_FILE).is_file():
            return  # nothing changed since the last complete build
    except IndexFolderError:
        pass
    (out / MANIFEST).unlink(missing_ok=True)  # incomplete until the new manifest is written
    started = time.perf_counter()
    index, info = build_faiss_index(_ShardVectors(files, sizes, dim), kind, exact_below=exact_below,
                                    recall_target=recall_target, progress=progress)
    info["build_seconds"] = round(time.perf_counter() - started, 2)
    with atomic_path(out / INDEX_FILE) as tmp:
        faiss.write_index(index, str(tmp))
    del index
    lines = "".join(json.dumps({"path": p, "vehicle": v, "camera": cam, "digest": d}) + "\n" for p, v, cam, d in items)
    atomic_write_text(out / ITEMS, lines)
    manifest = {
        "format": FORMAT, "model": predictor.fingerprint, "model_name": model_name, "count": len(items),
        "dim": dim, "dtype": "float16", "root": str(root), "source": str(Path(source).resolve()),
        "items": {"file": ITEMS, "sha256": hashlib.sha256(lines.encode()).hexdigest()},
        "items_digest": items_digest, "index": {"file": INDEX_FILE, **info}, "requested": requested,
        "chunk": chunk, "shards": [{"file": f"{SHARDS}/{f.name}", "count": n} for f, n in zip(files, sizes)],
        "attention_shape": attention_shape, "skipped": {"count": len(skipped), "first": skipped[:100]},
        "built": {"embedded_shards": counts["embedded"], "kept_shards": counts["kept"],
                  "world_size": int(os.environ.get("WORLD_SIZE", "1"))},
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        if (folder / SHARDS).is_dir():
            raise IndexFolderError(f"{folder} is an unfinished index build (no {MANIFEST}): run "
                                   f"`python -m rnnha.index build` again to resume it")
        raise IndexFolderError(f"{folder} is not an rnnha index folder (no {MANIFEST}): build one with "
                               f"`python -m rnnha.index build SOURCE {folder}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexFolderError(f"{path} is unreadable ({exc}); build the index again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFolderError(f"{path} is not an {FORMAT} manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r}); "
                               "build the index again with this version")
    return manifest


# --- FAISS: exact or approximate, configured ----------------------------------------------------------

def choose_kind(n: int, exact_below: int = DEFAULT_EXACT_BELOW) -> str:
    """"flat" (exact) for fewer than exact_below vectors, else the approximate kind."""
    return "flat" if n < exact_below else APPROXIMATE_KIND


class _ArrayVectors:
    def __init__(self, vectors: np.ndarray, step: int = 65536):
        if vectors.ndim != 2 or not len(vectors):
            raise ValueError(f"vectors must be a non-empty N x D array, got shape {vectors.shape}")
        self.vectors, self.step = np.ascontiguousarray(vectors, dtype=np.float32), step
        self.n, self.dim = vectors.shape

    def chunks(self) -> Iterator[np.ndarray]:
        for start in range(0, self.n, self.step):
            yield self.vectors[start:start + self.step]


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _rows(source, rows: np.ndarray) -> np.ndarray:
    """The vectors at the given sorted global rows, in one pass over the source."""
    found, start = [], 0
    for part in source.chunks():
        inside = rows[(rows >= start) & (rows < start + len(part))]
        found.append(part[inside - start])
        start += len(part)
    return np.concatenate(found)


def exact_topk(vectors, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, ids) by inner product, streamed over `vectors` (an array or chunk source)
    with FAISS's BLAS search: the ground truth for recall. (FAISS rather than NumPy: NumPy's own BLAS
    threads, busy right before, slowed the next FAISS searches on two cores several-fold.)"""
    faiss = import_faiss()
    source = _ArrayVectors(vectors) if isinstance(vectors, np.ndarray) else vectors
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    start = 0
    for chunk in source.chunks():
        scores, ids = faiss.knn(queries, np.ascontiguousarray(chunk), min(k, len(chunk)), metric=faiss.METRIC_INNER_PRODUCT)
        best_s, best_i = np.concatenate([best_s, scores], 1), np.concatenate([best_i, ids + start], 1)
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
        start += len(chunk)
    return best_s, best_i


def recall_at_k(approx_scores: np.ndarray, exact_scores: np.ndarray, k: int = RECALL_K, tolerance: float = 1e-5) -> float:
    """Recall@k of an approximate search against exact search: the share of the exact top-k that the
    approximate top-k found, counted by score (a result scoring at least the exact k-th score is one of
    the true top k), so that ties between equal vectors are not counted as misses."""
    kth = exact_scores[:, k - 1:k]
    hits = np.minimum((approx_scores[:, :k] >= kth - tolerance).sum(1), k)
    return float(hits.mean() / k)


def _searched(index):
    """The index that holds the search parameters (inside an IndexIDMap, for HNSW)."""
    faiss = import_faiss()
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index


def configure(index, info: dict) -> None:
    """Set the search-time parameter (efSearch, nprobe) that the build tuned."""
    faiss = import_faiss()
    if info.get("kind") == "hnsw":
        _searched(index).hnsw.efSearch = int(info["ef_search"])
    elif info.get("kind") == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(info["nprobe"])


def _add(index, source, rows: np.ndarray | None, skip: np.ndarray | None, bar) -> None:
    """Add the source's vectors to the index, with their positions as ids: all of them (rows None), only
    `rows` (sorted), or all but `skip` (sorted)."""
    start = 0
    for part in source.chunks():
        ids = np.arange(start, start + len(part), dtype=np.int64)
        start += len(part)
        if rows is not None:
            keep = np.isin(ids, rows, assume_unique=True)
        elif skip is not None:
            keep = ~np.isin(ids, skip, assume_unique=True)
        else:
            keep = np.ones(len(ids), bool)
        part, ids = part[keep], ids[keep]
        for s in range(0, len(part), 16384):  # progress every 16k vectors (HNSW adds slowly)
            index.add_with_ids(np.ascontiguousarray(part[s:s + 16384]), ids[s:s + 16384])
            bar.update(len(ids[s:s + 16384]))


def build_faiss_index(vectors, kind: str = "auto", *, exact_below: int = DEFAULT_EXACT_BELOW,
                      recall_target: float = RECALL_TARGET, k: int = RECALL_K, tuning_queries: int = TUNING_QUERIES,
                      hnsw_m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION, nlist: int | None = None,
                      seed: int = 0, progress: bool = False):
    """(faiss index, info) over unit-norm vectors (an N x D float32 array, or a chunk source), by inner
    product, each vector's id its row. kind: "flat" (exact), "hnsw" or "ivf" (approximate), "auto"
    (choose_kind, and exact after all where the approximate index does not pay, see below).

    An approximate index gets the smallest efSearch / nprobe whose recall@k against exact search
    reaches recall_target, measured with `tuning_queries` gallery vectors held out of the index while it
    is tuned (a vector inside an HNSW graph finds its neighbours through its own edges, which real
    queries do not have) and added after; info records the parameter and the recall reached. With
    kind="auto", an approximate index that cannot reach the target, or reaches it no faster than exact
    search of the same queries, is replaced by the exact one (info["approximate_tried"] says why): on
    hard, high-dimensional embeddings that happens at a million vectors on a small CPU (docs/index.md)."""
    faiss = import_faiss()
    from tqdm import tqdm

    source = _ArrayVectors(vectors) if isinstance(vectors, np.ndarray) else vectors
    n, dim = source.n, source.dim
    auto = kind == "auto"
    kind = choose_kind(n, exact_below) if auto else kind
    rng = np.random.default_rng(seed)
    info: dict = {"kind": kind, "metric": "inner_product"}
    bar = tqdm(total=n, unit="vec", desc=f"indexing ({kind})", disable=not progress)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        for part in source.chunks():
            index.add(part)
            bar.update(len(part))
        bar.close()
        return index, info
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = ef_construction
        index = faiss.IndexIDMap(inner)
        index.own_fields = True
        inner.this.disown()
        info.update(M=hnsw_m, ef_construction=ef_construction)
    elif kind == "ivf":
        nlist = int(nlist or max(1, min(round(4 * math.sqrt(n)), n // 39 or 1)))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.niter = 10
        train = _rows(source, np.sort(rng.choice(n, min(n, 64 * nlist), replace=False)))
        index.train(train)
        del train
        info.update(nlist=nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r}: one of {', '.join(KINDS)}")
    held = np.sort(rng.choice(n, min(tuning_queries, max(1, n // 10)), replace=False))
    _add(index, source, None, held, bar)
    queries = _rows(source, held)
    extra = 16  # held-out rows among a query's exact neighbours are not in the index yet: dropped
    started = time.perf_counter()
    exact_s, exact_i = exact_topk(source, queries, k + extra)
    exact_seconds = time.perf_counter() - started
    exact = np.full((len(held), k), -np.inf, np.float32)
    for q in range(len(held)):
        kept = exact_s[q][~np.isin(exact_i[q], held)][:k]
        exact[q, :len(kept)] = kept
    name = "ef_search" if kind == "hnsw" else "nprobe"
    if kind == "hnsw":
        candidates = [e for e in EF_SEARCH if e >= k]
    else:
        most = max(1, nlist // 4)  # scanning more than a quarter of the lists is slower than exact search
        candidates = sorted({max(1, round(1.5 ** i)) for i in range(64) if 1.5 ** i <= most} | {most})
    measured: dict[int, float] = {}

    def recall(i: int) -> float:
        configure(index, {"kind": kind, name: candidates[i]})
        measured[candidates[i]] = recall_at_k(index.search(queries, k)[0], exact, k)
        return measured[candidates[i]]

    lo, hi = 0, len(candidates) - 1
    if recall(hi) >= recall_target:  # the smallest candidate that reaches the target (recall grows with it)
        while lo < hi:
            mid = (lo + hi) // 2
            if recall(mid) >= recall_target:
                hi = mid
            else:
                lo = mid + 1
    else:
        log.warning("the %s index reaches recall@%d %.3f at most (%s=%d), under the target %.3f",
                    kind, k, measured[candidates[hi]], name, candidates[hi], recall_target)
    chosen = candidates[hi]
    configure(index, {"kind": kind, name: chosen})
    started = time.perf_counter()
    index.search(queries, k)
    seconds = time.perf_counter() - started
    info.update({name: chosen, f"recall_at_{k}": round(measured[chosen], 4), "recall_target": recall_target,
                 "recall_queries": len(held), "recall_measured_on": "gallery vectors held out of the index while it was tuned",
                 "search_seconds": round(seconds, 4), "exact_search_seconds": round(exact_seconds, 4),
                 "tuning": {str(p): round(r, 4) for p, r in sorted(measured.items())}})
    if auto and (measured[chosen] < recall_target or seconds >= exact_seconds):
        why = "under the recall target" if measured[chosen] < recall_target else "no faster than exact search"
        log.warning("the %s index is %s (recall@%d %.3f in %.2f s, exact %.2f s for %d queries): exact search instead",
                    kind, why, k, measured[chosen], seconds, exact_seconds, len(held))
        bar.close()
        del index
        flat, flat_info = build_faiss_index(source, "flat", progress=progress)
        return flat, {**flat_info, "approximate_tried": {**info, "reason": why}}
    _add(index, source, held, None, bar)
    bar.close()
    return index, info


def make_faiss_index(vectors: np.ndarray, kind: str = "auto", **options):
    """A configured FAISS index (efSearch / nprobe tuned) over unit-norm N x D float32 vectors; the
    options are build_faiss_index's. For benchmarks: `index.search(queries, k)` -> (scores, ids)."""
    return build_faiss_index(vectors, kind, **options)[0]


# --- an index opened for search: what a Gallery is to ReidService --------------------------------------

class _Categories:
    """A column of few distinct strings (vehicles, cameras): codes and the distinct values."""

    def __init__(self, values: list[str | None]):
        codes: dict[str | None, int] = {}
        self.codes = np.fromiter((codes.setdefault(v, len(codes)) for v in values), np.int32, len(values))
        self.values = list(codes)

    def __getitem__(self, i: int) -> str | None:
        return self.values[self.codes[i]]


class _Strings:
    """A column of distinct strings (paths), packed into one bytes object and offsets."""

    def __init__(self, values: list[str]):
        encoded = [v.encode() for v in values]
        self.offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=self.offsets[1:])
        self.blob = b"".join(encoded)

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].decode()


class IndexItems(Sequence):
    """The index's images as GalleryItems, made on access: a million GalleryItem objects would take a
    gigabyte, these columns take about 100 bytes an image."""

    def __init__(self, root: Path, paths: list[str], vehicles: list, cameras: list, digests: list[str]):
        self.root = Path(root)
        self._paths, self._vehicles, self._cameras = _Strings(paths), _Categories(vehicles), _Categories(cameras)
        self.digests = np.array(digests, dtype="S40")

    def __len__(self) -> int:
        return len(self.digests)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        return GalleryItem(self.root / self._paths[i], self._vehicles[i], self._cameras[i], self.digests[i].decode())

    def path(self, i: int) -> str:
        """The path as stored (relative to root, or absolute)."""
        return self._paths[i]

    @cached_property
    def _by_digest(self) -> tuple[np.ndarray, np.ndarray, int]:
        order = np.argsort(self.digests, kind="stable")
        ordered = self.digests[order]
        boundaries = np.flatnonzero(ordered[1:] != ordered[:-1])
        runs = np.diff(np.concatenate([[-1], boundaries, [len(ordered) - 1]]))
        return ordered, order, int(runs.max()) if len(runs) else 0

    @property
    def most_copies(self) -> int:
        """The most items that share one file content."""
        return self._by_digest[2]

    def with_digest(self, digest: str) -> np.ndarray:
        """Positions of the items whose file has this digest: a binary search, no loop over the items."""
        ordered, order, _ = self._by_digest
        key = digest.encode()
        return order[np.searchsorted(ordered, key, "left"):np.searchsorted(ordered, key, "right")]

    @cached_property
    def _by_path(self) -> tuple[np.ndarray, np.ndarray]:
        hashes = np.fromiter((hash(self._paths[i]) for i in range(len(self))), np.int64, len(self))
        order = np.argsort(hashes, kind="stable")
        return hashes[order], order

    def position_of(self, path: str | Path) -> int | None:
        """The position of the item whose file is `path` (a resolved path), or None: only the index's own
        files are found, not any other file beside them."""
        path = Path(path)
        keys = [str(path)]
        try:
            keys.insert(0, path.relative_to(self.root.resolve()).as_posix())
        except ValueError:
            pass
        hashes, order = self._by_path
        for key in keys:
            h = hash(key)
            for j in order[np.searchsorted(hashes, h, "left"):np.searchsorted(hashes, h, "right")]:
                if self._paths[int(j)] == key:
                    return int(j)
        return None


class _ShardAttention:
    """gallery.attention[i] (or [list of i]) of an index: read from the shards on demand, a page at a time."""

    def __init__(self, files: list[Path], counts: list[int]):
        self.files = files
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index):
        from safetensors.torch import safe_open

        single = isinstance(index, (int, np.integer))
        wanted = [int(index)] if single else [int(i) for i in index]
        maps: dict[int, torch.Tensor] = {}
        shards = np.searchsorted(self.starts, wanted, "right") - 1
        for shard in sorted(set(shards.tolist())):
            with safe_open(str(self.files[shard]), "pt") as f:
                part = f.get_slice("attention")
                for i, s in zip(wanted, shards):
                    if s == shard:
                        row = i - int(self.starts[shard])
                        maps[i] = part[row:row + 1][0].float()
        if single:
            return maps[wanted[0]]
        return torch.stack([maps[i] for i in wanted]) if wanted else torch.zeros(0)


class IndexGallery:
    """A built index folder, open for search. Used where a Gallery is: items, len(), search(query, k,
    exclude_digest) and attention[i] (read from the shards, a displayed page at a time)."""

    def __init__(self, folder: Path, manifest: dict, items: IndexItems, index, attention: _ShardAttention):
        self.folder, self.manifest, self.items, self.index, self.attention = folder, manifest, items, index, attention

    @classmethod
    def open(cls, folder: str | Path, predictor=None, *, fingerprint: str | None = None,
             root: str | Path | None = None) -> "IndexGallery":
        """Open and check an index folder: its manifest, its items (count, checksum), the FAISS index
        (count, dim) and that it was built with the model that will embed the queries (`predictor` or
        its `fingerprint`). root: where the images are now, if they moved since the build."""
        faiss = import_faiss()
        folder = Path(folder)
        manifest = read_manifest(folder)
        fingerprint = fingerprint or (predictor.fingerprint if predictor is not None else None)
        if fingerprint is not None and manifest.get("model") != fingerprint:
            raise IndexFolderError(
                f"{folder} was built with another model ({manifest.get('model_name') or 'unnamed'}, fingerprint "
                f"{str(manifest.get('model'))[:12]}), not the one given (fingerprint {fingerprint[:12]}): search it "
                f"with --model {manifest.get('model_name') or 'MODEL'} or build it again with this model")
        try:
            count, dim = int(manifest["count"]), int(manifest["dim"])
            items_file = folder / manifest["items"]["file"]
            index_file = folder / manifest["index"]["file"]
            shard_files = [folder / s["file"] for s in manifest["shards"]]
            shard_counts = [int(s["count"]) for s in manifest["shards"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFolderError(f"{folder / MANIFEST} lacks {exc}; build the index again") from None
        try:
            data = items_file.read_bytes()
        except OSError as exc:
            raise IndexFolderError(f"{items_file} is unreadable ({exc.strerror}); build the index again") from None
        if hashlib.sha256(data).hexdigest() != manifest["items"].get("sha256"):
            raise IndexFolderError(f"{items_file.name} does not match the manifest (changed after the build); "
                                   "build the index again")
        rows = [json.loads(line) for line in data.decode().splitlines()]
        del data
        missing = [f.name for f in shard_files if not f.is_file()]
        if len(rows) != count or sum(shard_counts) != count or missing:
            raise IndexFolderError(f"{folder} is inconsistent ({len(rows)} items, {sum(shard_counts)} in shards, "
                                   f"manifest {count}{', missing ' + missing[0] if missing else ''}); build it again")
        try:
            index = faiss.read_index(str(index_file))
        except RuntimeError as exc:
            raise IndexFolderError(f"{index_file} is unreadable ({str(exc).splitlines()[0][:200]}); build the index again") from None
        if index.ntotal != count or index.d != dim:
            raise IndexFolderError(f"{index_file.name} holds {index.ntotal} vectors of {index.d} dimensions, the "
                                   f"manifest {count} of {dim}; build the index again")
        configure(index, manifest["index"])
        items = IndexItems(Path(root) if root is not None else Path(manifest["root"]),
                           [r["path"] for r in rows], [r.get("vehicle") for r in rows],
                           [r.get("camera") for r in rows], [r["digest"] for r in rows])
        return cls(folder, manifest, items, index, _ShardAttention(shard_files, shard_counts))

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"IndexGallery({self.folder}, {len(self)} images, {self.kind})"

    @property
    def kind(self) -> str:
        return self.manifest["index"]["kind"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["model"]

    @property
    def model_name(self) -> str | None:
        return self.manifest.get("model_name")

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def search(self, queries, k: int = 5, exclude_digests=None, *, exclude_digest: str | None = None):
        """Top-k (index, cosine similarity), best first, skipping the query's own image (every item with
        its file's digest: FAISS is asked for k + the most copies of one image, the positions come from a
        digest lookup).

        queries: one embedding (D) -> a list of (index, score), as Gallery.search, with exclude_digests
        the query file's digest or None (or Gallery.search's keyword, exclude_digest); or a Q x D array
        -> a list of Q such lists, with exclude_digests None or one digest (or None) per query."""
        if exclude_digest is not None:
            exclude_digests = exclude_digest
        q = queries.detach().float().cpu().numpy() if isinstance(queries, torch.Tensor) else np.asarray(queries, np.float32)
        single = q.ndim == 1
        if single:
            q, excluded = q[None], [exclude_digests]
        else:
            excluded = list(exclude_digests) if exclude_digests is not None else [None] * len(q)
        if q.ndim != 2 or q.shape[1] != self.dim or len(excluded) != len(q):
            raise ValueError(f"queries must be {self.dim} or Q x {self.dim} (with one digest each), got shape {q.shape}")
        k = max(0, min(int(k), len(self)))
        if k == 0 or not len(q):
            return [] if single else [[] for _ in q]
        extra = self.items.most_copies if any(excluded) else 0
        scores, ids = self.index.search(np.ascontiguousarray(q, dtype=np.float32), min(k + extra, len(self)))
        results = []
        for row, digest in enumerate(excluded):
            own = set(self.items.with_digest(digest).tolist()) if digest else set()
            hits = []
            for i, s in zip(ids[row].tolist(), scores[row].tolist()):
                if i >= 0 and i not in own:
                    hits.append((i, s if math.isfinite(s) else float("-inf")))
                    if len(hits) == k:
                        break
            results.append(hits)
        return results[0] if single else results


# --- synthetic re-id embeddings for benchmarks ---------------------------------------------------------

def synthetic_embeddings(n: int, dim: int = 1024, queries: int = 100, seed: int = 0,
                         chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(gallery N x D, queries Q x D), unit-norm float32, shaped like re-id embeddings: vehicles of
    car models, each vehicle seen in 2-6 gallery images, each query another view of a gallery vehicle.
    The spread is anisotropic (power law) with a shared mean direction, set so that the statistics match
    the default model's on the two-camera data: same vehicle cosine 0.69 +- 0.11 (real 0.71 +- 0.10),
    other vehicles 0.04 +- 0.14 (0.03 +- 0.11), nearest other of 1,014 images 0.47 (0.50), rank-1 96 %
    (94 %). Isotropic random vectors would make every neighbour equally far."""
    rng = np.random.default_rng(seed)
    scale = np.arange(1, dim + 1, dtype=np.float32) ** -0.47
    scale /= np.linalg.norm(scale)
    vehicle = np.repeat(np.arange(n), rng.integers(2, 7, n))[:n]
    vehicles = int(vehicle[-1]) + 1
    models = rng.standard_normal((max(1, vehicles // 50), dim), dtype=np.float32) * scale
    mean = rng.standard_normal(dim).astype(np.float32) * scale
    mean *= 0.18 / np.linalg.norm(mean)
    model_of = rng.integers(0, len(models), vehicles)
    centres = np.empty((vehicles, dim), np.float32)
    for s in range(0, vehicles, chunk):
        e = min(vehicles, s + chunk)
        centres[s:e] = _unit(models[model_of[s:e]] * 0.6 + rng.standard_normal((e - s, dim), dtype=np.float32) * scale * 0.8)

    def views(which: np.ndarray) -> np.ndarray:
        out = np.empty((len(which), dim), np.float32)
        for s in range(0, len(which), chunk):
            part = which[s:s + chunk]
            noise = rng.uniform(0.35, 1.0, (len(part), 1)).astype(np.float32)
            out[s:s + len(part)] = _unit(centres[part] + rng.standard_normal((len(part), dim), dtype=np.float32) * scale * noise + mean)
        return out

    gallery = views(vehicle)
    return gallery, views(rng.choice(vehicle, queries, replace=queries > n))




def bench(n: int, dim: int = 1024, queries: int = 100, kinds: Sequence[str] = ("flat", APPROXIMATE_KIND),
          recall_queries: int = 1000, repeats: int = 5, seed: int = 0, report: Callable[[dict], None] = print,
          **options) -> list[dict]:
    """Build each kind over n synthetic embeddings (options: build_faiss_index's, e.g. hnsw_m,
    ef_construction, nlist, recall_target) and time top-5 for 1 and `queries` queries (median of
    `repeats` after a warm-up); recall@5 against exact search on `recall_queries` held-out views of
    gallery vehicles (the build tunes on held-out gallery vectors instead)."""
    import resource

    from .bench import rss_bytes, seconds

    faiss = import_faiss()
    started = time.perf_counter()
    gallery, held_out = synthetic_embeddings(n, dim, max(queries, recall_queries), seed)
    report({"synthetic": n, "dim": dim, "seconds": round(time.perf_counter() - started, 1),
            "threads": faiss.omp_get_max_threads()})
    exact_s, _ = exact_topk(gallery, held_out[:recall_queries], RECALL_K)
    rows = []
    for kind in kinds:
        before = rss_bytes()
        started = time.perf_counter()
        index, info = build_faiss_index(gallery, kind, seed=seed, **options)
        row = {"kind": kind, "n": n, "dim": dim, "build_s": round(time.perf_counter() - started, 1),
               "memory_gib": round((rss_bytes() - before) / 2**30, 2),
               "search_1_query_s": round(seconds(lambda i=index: i.search(held_out[:1], RECALL_K), repeats), 5),
               f"search_{queries}_queries_s": round(seconds(lambda i=index: i.search(held_out[:queries], RECALL_K),
                                                            repeats), 4),
               "recall_at_5_held_out": round(recall_at_k(index.search(held_out[:recall_queries], RECALL_K)[0], exact_s), 4),
               **{key: value for key, value in info.items() if key not in ("kind", "metric", "recall_measured_on")},
               "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
        del index
        report(row)
        rows.append(row)
    return rows


# --- command line -------------------------------------------------------------------------------------

def _build_command(args, load_model) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if world > 1:
        if device is None:
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        else:  # processes that share the CPUs share its threads
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    options = {"batch_size": args.batch} if args.batch else {}
    predictor = load_model(args.model, device=device, **options)
    manifest = build(args.source, args.out, predictor, model_name=args.model, chunk=args.chunk, kind=args.kind,
                     exact_below=args.exact_below, recall_target=args.recall, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        info = manifest["index"]
        tuned = "" if info["kind"] == "flat" else \
            f", {'efSearch' if info['kind'] == 'hnsw' else 'nprobe'} {info.get('ef_search', info.get('nprobe'))} " \
            f"for recall@5 {info.get('recall_at_5')}"
        tried = info.get("approximate_tried")
        if tried:
            tuned = f" (the {tried['kind']} index tried was {tried['reason']}: recall@5 {tried.get('recall_at_5')})"
        skipped = manifest["skipped"]["count"]
        print(f"{args.out}: {manifest['count']} images, {info['kind']} index{tuned}"
              + (f"; {skipped} skipped (manifest.json lists them)" if skipped else ""))
    return 0


def _search_command(args, load_model) -> int:
    manifest = read_manifest(args.out)
    model = args.model or manifest.get("model_name")
    if not model:
        raise IndexFolderError(f"{args.out} does not name its model: pass --model")
    predictor = load_model(model, device=args.device)
    gallery = IndexGallery.open(args.out, predictor)
    embeddings = predictor.embed(args.images)
    digests = [file_digest(Path(p).read_bytes()) for p in args.images]
    results = gallery.search(embeddings.numpy(), args.k, digests)
    payload = []
    for image, hits in zip(args.images, results):
        matches = []
        for rank, (i, score) in enumerate(hits, 1):
            item = gallery.items[i]
            matches.append({"rank": rank, "similarity": round(score, 4), "image": str(item.path),
                            "vehicle": item.vehicle, "camera": item.camera})
        payload.append({"image": image, "matches": matches})
    if args.json:
        print(json.dumps({"index": str(args.out), "count": len(gallery), "kind": gallery.kind, "results": payload}))
        return 0
    for result in payload:
        print(f"{result['image']}: closest of {len(gallery)} indexed images (cosine similarity)")
        for m in result["matches"]:
            who = " ".join(x for x in (m["vehicle"], m["camera"] and f"cam{m['camera']}") if x)
            print(f"  {m['rank']}. {m['similarity']:.3f}  {m['image']}" + (f"  {who}" if who else ""))
    return 0


def _bench_command(args, load_model=None) -> int:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for kind in kinds:
        if kind not in KINDS[1:]:
            raise IndexFolderError(f"unknown index kind {kind!r}: one of {', '.join(KINDS[1:])}")
    options = {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction, "nlist": args.nlist,
               "recall_target": args.recall}
    bench(args.n, args.dim, args.queries, kinds, args.recall_queries, args.repeats, args.seed,
          report=lambda row: print(json.dumps(row), flush=True), **options)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnha.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("build", help="embed a folder or CSV of images into an index folder (resumable)")
    p.add_argument("source", help="a folder of images (recursive) or a CSV with a `path` column")
    p.add_argument("out", help="the index folder (created; a stopped build there is resumed)")
    p.add_argument("--model", default="default",
                   help="zoo name, model folder, hf-hub:ORG/NAME or checkpoint (default: default)")
    p.add_argument("--batch", type=int, help="images per forward pass (default: the predictor's, 32)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the best available; under torchrun cuda:LOCAL_RANK)")
    p.add_argument("--exact-below", type=int, default=DEFAULT_EXACT_BELOW, metavar="N",
                   help=f"exact search below N images, approximate from N (default {DEFAULT_EXACT_BELOW})")
    p.add_argument("--kind", default="auto", choices=KINDS, help="force the index kind (default: by --exact-below)")
    p.add_argument("--recall", type=float, default=RECALL_TARGET,
                   help=f"recall@5 the approximate index is tuned to (default {RECALL_TARGET})")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help=f"images per shard (default {DEFAULT_CHUNK})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = sub.add_parser("search", help="the closest indexed images of query images")
    p.add_argument("out", metavar="INDEX", help="an index folder")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", help="the model the index was built with (default: the name in its manifest)")
    p.add_argument("--k", type=int, default=5, help="matches per image (default 5)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the best available)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("bench", help="exact vs approximate search on synthetic re-id embeddings (no images)")
    p.add_argument("--n", type=int, default=1_000_000, help="gallery size (default 1000000)")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--queries", type=int, default=100, help="queries per timed batch (default 100)")
    p.add_argument("--recall-queries", type=int, default=1000, help="held-out queries for recall@5 (default 1000)")
    p.add_argument("--kinds", default=f"flat,{APPROXIMATE_KIND}", help="comma-separated: flat, hnsw, ivf")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recall", type=float, default=RECALL_TARGET, help=f"recall@5 to tune to (default {RECALL_TARGET})")
    p.add_argument("--hnsw-m", type=int, default=HNSW_M, help=f"HNSW links per vector (default {HNSW_M})")
    p.add_argument("--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION,
                   help=f"HNSW build effort (default {HNSW_EF_CONSTRUCTION})")
    p.add_argument("--nlist", type=int, help="IVF lists (default 4 sqrt(N))")
    args = parser.parse_args(argv)
    if getattr(args, "k", 1) < 1 or getattr(args, "chunk", 1) < 1 or (getattr(args, "batch", None) or 1) < 1:
        print("error: --k, --chunk and --batch take a positive number", file=sys.stderr)
        return 2
    commands = {"build": _build_command, "search": _search_command, "bench": _bench_command}
    try:
        if args.command == "bench":
            return _bench_command(args)
        from zoo import load_model  # the command line resolves model names through the catalogue

        return commands[args.command](args, load_model)
    except (ValueError, OSError, LookupError, ImportError) as exc:  # LookupError: zoo.ZooError, an unknown model
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
