"""What the app does, without the UI: identify a vehicle against a gallery, compare two images, draw
attention. app.py only wires these to Gradio components.

Work per request is bounded: every image is decoded at most DISPLAY_SIDE pixels a side (large JPEGs
at reduced size, see rnnha.images), embedded from that, and its overlay drawn at that size."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .data.two_camera import parse_name
from .gallery import Gallery, GalleryItem, file_digest
from .images import load_image
from .overlay import attention_overlay

__all__ = ["ReidService", "Match", "Step", "Identification", "Comparison", "hierarchy_path", "path_text",
           "DISPLAY_SIDE", "TILE_SIDE", "SURE_AT"]

DISPLAY_SIDE = 1024  # pixels a side of what is embedded and shown (HiDPI-sharp in the app's columns)
TILE_SIDE = 384  # the attention browser's thumbnails
SURE_AT = 0.5  # a level's top-1 probability (calibrated where the model has temperatures) to be "sure"


@dataclass
class Step:
    """One coarse level of the coarse-to-fine path: its top-1 label and probability."""

    level: str
    label: str
    probability: float
    sure: bool  # probability >= SURE_AT


def hierarchy_path(levels: dict[str, list[tuple[str, float]]], level_names: list[str],
                   hierarchy: dict | None = None, sure_at: float = SURE_AT) -> list[Step]:
    """The coarse-to-fine path of one prediction (Prediction.levels): the top-1 of each coarse level in
    order (the identity level has no names to show), down to the first level it is not sure of. A level
    follows only a sure parent, and only a parent label it applies to: `hierarchy` ({level: {parent
    level: [labels]}}, from the training data) says e.g. that car models apply under "car", not "truck"."""
    steps: list[Step] = []
    for level in level_names[:-1] if len(level_names) > 1 else level_names:
        if steps:
            parent = steps[-1]
            under = (hierarchy or {}).get(level, {}).get(parent.level)
            if not parent.sure or (under is not None and parent.label not in under):
                break
        label, probability = levels[level][0]
        steps.append(Step(level, label, float(probability), float(probability) >= sure_at))
    return steps


def path_text(steps: list[Step]) -> str:
    """"car 99 % → Audi TTS Coupe 2012 81 %", a level it is not sure of marked "(not sure)"."""
    return " → ".join(f"{s.label} {100 * s.probability:.0f} %" + ("" if s.sure else " (not sure)") for s in steps)


@dataclass
class Match:
    rank: int
    similarity: float
    item: GalleryItem
    correct: bool | None  # None when the query's identity is unknown


@dataclass
class Identification:
    coarse: dict[str, float]  # label -> probability, top-k of the coarse (car model / type) level
    coarse_level: str
    matches: list[Match]
    overlay: Image.Image | None  # None when the service draws no overlays
    query_vehicle: str | None
    path: list[Step] = field(default_factory=list)  # coarse to fine, down to the first level not sure of

    @property
    def answer(self) -> Step | None:
        """The deepest level it is sure of, or None: not sure of anything."""
        sure = [step for step in self.path if step.sure]
        return sure[-1] if sure else None


@dataclass
class Comparison:
    similarity: float
    same: bool | None  # None when the model has no calibrated threshold
    threshold: float | None
    overlays: tuple[Image.Image | None, Image.Image | None]
    probability: float | None = None  # of the same vehicle (rnnha.calibration), None when not fitted


@dataclass
class ReidService:
    predictor: object  # rnnha.predictor.Predictor
    gallery: Gallery  # or an rnnha.index.IndexGallery: items, len(), search(), attention[i]
    cmap: str = "inferno"
    alpha: float = 0.5
    overlays: bool = True  # False: no attention overlays drawn (a command line shows none)

    @property
    def threshold(self) -> float | None:
        info = self.predictor.info
        return float(info.threshold) if info is not None and info.threshold is not None else None

    @property
    def threshold_source(self) -> str:
        info = self.predictor.info
        return info.threshold_source if info is not None else ""

    @property
    def calibration(self) -> dict:
        info = self.predictor.info
        return info.calibration if info is not None else {}

    def same_vehicle_probability(self, similarity: float) -> float | None:
        """p(same vehicle | similarity) of the model folder's fit, or None when it has none."""
        from .calibration import same_vehicle_probability

        fit = self.calibration.get("same_vehicle")
        return same_vehicle_probability(similarity, fit) if fit else None

    def similarity_picture(self, similarity: float | None = None) -> Image.Image | None:
        """The same- and different-vehicle similarity distributions of the calibration pairs with the
        threshold and this similarity marked (rnnha.calibration), or None when the folder has no pairs."""
        from .calibration import similarity_picture

        pairs = self.calibration.get("pairs")
        if not pairs or self.threshold is None:
            return None
        return similarity_picture(pairs, self.threshold, similarity)

    @property
    def calibrated(self) -> bool:
        """Whether the coarse levels' probabilities are calibrated (the folder has temperatures)."""
        return bool(self.calibration.get("temperatures"))

    @property
    def coarse_level(self) -> int:
        names = self.predictor.level_names
        return names.index("model") if "model" in names else 0

    def identify(self, source, name: str | None = None, topk: int = 5, raw: bool = False) -> Identification:
        """source: a path, bytes or image; name: the original file name (tells a known identity)."""
        return self.identify_many([source], [name], topk, raw)[0]

    def identify_many(self, sources, names=None, topk: int = 5, raw: bool = False) -> list[Identification]:
        """identify() for several images, with one model forward for all of them."""
        names = names or [None] * len(sources)
        images = [load_image(source, max_side=DISPLAY_SIDE) for source in sources]
        info = self.predictor.info
        results = []
        for source, name, image, prediction in zip(sources, names, images, self.predictor.predict(images, topk=topk)):
            digest = _digest(source)  # a gallery image given as the query is not its own match
            parsed = parse_name(Path(name).name) if name else None
            query_vehicle = parsed["vehicle"] if parsed else None
            matches = []
            for rank, (index, similarity) in enumerate(self.gallery.search(prediction.embedding, topk, digest), 1):
                item = self.gallery.items[index]
                correct = None if query_vehicle is None or item.vehicle is None else item.vehicle == query_vehicle
                matches.append(Match(rank, similarity, item, correct))
            overlay = attention_overlay(image, prediction.attention, self.alpha, self.cmap, raw) \
                if self.overlays else None
            path = hierarchy_path(prediction.levels, self.predictor.level_names, info.hierarchy if info else None)
            # the top-k shown: of the deepest level on the path (a truck's type, a car's car model)
            level = path[-1].level if path else self.predictor.level_names[self.coarse_level]
            results.append(Identification(dict(prediction.levels[level]), level, matches, overlay, query_vehicle, path))
        return results

    def compare(self, first, second, raw: bool = False) -> Comparison:
        return self.compare_many([(first, second)], raw)[0]

    def compare_many(self, pairs, raw: bool = False) -> list[Comparison]:
        """compare() for several pairs, with one model forward for all of their images."""
        images = [load_image(source, max_side=DISPLAY_SIDE) for pair in pairs for source in pair]
        predictions = self.predictor.predict(images, topk=1)
        threshold, results = self.threshold, []
        for i in range(0, len(images), 2):
            a, b = predictions[i], predictions[i + 1]
            similarity = float(a.embedding @ b.embedding)
            same = None if threshold is None else similarity >= threshold
            overlays = tuple(attention_overlay(im, p.attention, self.alpha, self.cmap, raw)
                             if self.overlays else None for im, p in zip(images[i:i + 2], (a, b)))
            results.append(Comparison(similarity, same, threshold, overlays, self.same_vehicle_probability(similarity)))
        return results

    def gallery_overlay(self, index: int, raw: bool = False, max_side: int = TILE_SIDE) -> Image.Image:
        return self.gallery_overlays([index], raw, max_side)[0]

    def gallery_overlays(self, indices, raw: bool = False, max_side: int = TILE_SIDE) -> list[Image.Image]:
        """The attention overlays of several gallery images (a browser page): their maps are read in one
        go, which an index gallery reads from its shards on disk."""
        indices = [int(i) for i in indices]
        maps = self.gallery.attention[indices] if indices else []
        return [attention_overlay(load_image(self.gallery.items[i].path, max_side=max_side), attention,
                                  self.alpha, self.cmap, raw) for i, attention in zip(indices, maps)]


def _digest(source) -> str | None:
    if isinstance(source, (str, Path)) and Path(source).is_file():
        import hashlib

        digest = hashlib.sha1()
        with open(source, "rb") as f:  # streamed: no second copy of a large upload in memory
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    if isinstance(source, (bytes, bytearray)):
        return file_digest(bytes(source))
    return None
