"""RNN-HA demo: identify a vehicle, compare two images, browse attention. UI wiring only: the logic
is rnnha.service (identify / compare / overlays), rnnha.gallery (index and cache), zoo (models).

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / _PORT honoured)
"""
from __future__ import annotations

import functools
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import gradio as gr

from rnnha.gallery import Gallery, items_from_folder, items_from_uploads
from rnnha.images import ImageError
from rnnha.overlay import colorbar
from rnnha.service import ReidService
from zoo import list_models, load_model

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_GALLERY = ASSETS / "gallery"
CACHE = Path(os.environ.get("RNNHA_CACHE", Path(tempfile.gettempdir()) / "rnnha-cache"))
PAGE = 12
MATCH_COLUMNS = ["rank", "similarity", "vehicle", "camera", "correct", "file"]


@lru_cache(maxsize=4)
def _predictor(model: str):
    return load_model(model)


@lru_cache(maxsize=1)
def _default_items():
    return tuple(items_from_folder(DEFAULT_GALLERY))


@lru_cache(maxsize=8)
def _gallery(model: str, items: tuple) -> Gallery:
    return Gallery.build(_predictor(model), items, CACHE / "galleries")


def service(model: str, items=None) -> ReidService:
    """The model with a gallery (the shipped one when items is None), both built once and cached."""
    predictor = _predictor(model)
    gallery = _gallery(model, tuple(items) if items else _default_items())
    return ReidService(predictor, gallery, metadata=predictor.metadata)


def _path_and_name(payload) -> tuple[str, str | None]:
    """An image input's raw payload (preprocess=False) -> server path and original file name."""
    if payload is None:
        raise gr.Error("No image: upload one or pick an example.")
    if isinstance(payload, str):
        return payload, Path(payload).name
    path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
    name = payload.get("orig_name") if isinstance(payload, dict) else getattr(payload, "orig_name", None)
    if not path:
        raise gr.Error("The upload is empty: choose an image file.")
    return path, name or Path(path).name


def _errors(fn):
    """Every user-caused failure becomes a clear message in the UI and the API; the app keeps serving."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ImageError, ValueError, OSError, LookupError) as exc:
            raise gr.Error(str(exc)) from None
    return wrapper


@_errors
def identify(image, model: str, items, raw: bool = False):
    """One vehicle image -> car model / type (top-5), top-5 gallery matches, attention overlay."""
    path, name = _path_and_name(image)
    result = service(model, items).identify(path, name, raw=bool(raw))
    rows = [[m.rank, round(m.similarity, 4), m.item.vehicle or "", m.item.camera or "",
             "" if m.correct is None else ("yes" if m.correct else "no"), m.item.path.name] for m in result.matches]
    captions = [(str(m.item.path), f"#{m.rank} {m.similarity:.3f} {m.item.vehicle or m.item.path.stem}"
                 + {None: "", True: " ✓", False: " ✗"}[m.correct]) for m in result.matches]
    note = f"Query identity: **{result.query_vehicle}** (from its file name)." if result.query_vehicle else \
        "Query identity unknown: matches are not marked."
    return result.coarse, rows, captions, result.overlay, note


@_errors
def compare(first, second, model: str, raw: bool = False):
    """Two images -> cosine similarity, a same / different verdict, both attention overlays."""
    svc = service(model)
    result = svc.compare(_path_and_name(first)[0], _path_and_name(second)[0], raw=bool(raw))
    if result.same is None:
        verdict = "no calibrated threshold for this model"
    else:
        verdict = "same vehicle" if result.same else "different vehicles"
    return result.similarity, verdict, result.overlays[0], result.overlays[1], _threshold_note(svc)


def _threshold_note(svc: ReidService) -> str:
    if svc.threshold is None:
        return "This model has no calibrated same-vehicle threshold."
    return (f"Threshold **{svc.threshold:.3f}** (cosine), calibrated on {svc.threshold_source or 'validation pairs'}.")


@_errors
def browse(model: str, items, page: int, raw: bool = False):
    svc = service(model, items)
    pages = max(1, -(-len(svc.gallery) // PAGE))
    page = min(max(0, int(page)), pages - 1)
    indices = range(page * PAGE, min(len(svc.gallery), (page + 1) * PAGE))
    tiles = [(svc.gallery_overlay(i, bool(raw)), f"{svc.gallery.items[i].path.name}") for i in indices]
    return tiles, page, f"Page {page + 1} of {pages} ({len(svc.gallery)} images). Click one to identify it."


def pick_from_browser(model: str, items, page: int, evt: gr.SelectData):
    svc = service(model, items)
    item = svc.gallery.items[page * PAGE + evt.index]
    return str(item.path), gr.Tabs(selected="identify")


@_errors
def build_gallery(files, model: str, progress=gr.Progress()):
    if not files:
        raise gr.Error("Upload images or a zip file first.")
    paths = [f if isinstance(f, str) else f.name for f in files]
    items, skipped = items_from_uploads(paths, tempfile.mkdtemp(prefix="gallery-", dir=_uploads_dir()))
    Gallery.build(_predictor(model), items, CACHE / "galleries", lambda f, text: progress(f, desc=text))
    note = f"Gallery of {len(items)} images ready." + (f" Skipped: {'; '.join(skipped)}" if skipped else "")
    return items, note


def _uploads_dir() -> Path:
    (CACHE / "uploads").mkdir(parents=True, exist_ok=True)
    return CACHE / "uploads"


def build_demo(default_model: str = "default") -> gr.Blocks:
    models = list_models()
    examples = [str(p) for p in sorted(DEFAULT_GALLERY.glob("*_cam1.jpg"))[:6]]
    with gr.Blocks(title="RNN-HA vehicle re-identification") as demo:
        gr.Markdown("# RNN-HA: coarse-to-fine vehicle re-identification\n"
                    "Which car model is it, which gallery vehicle is it, and where does the model look? "
                    "([paper](https://arxiv.org/abs/1812.04239))")
        items = gr.State(None)  # None: the shipped gallery
        with gr.Row():
            model = gr.Dropdown(models, value=default_model if default_model in models else None,
                                label="Model (from the zoo)", scale=2)
            with gr.Column(scale=1):
                gr.Image(colorbar(), label="Attention colormap", interactive=False, height=60)
                raw = gr.Checkbox(False, label="Show the raw attention map (no blending)")
        with gr.Tabs() as tabs:
            with gr.Tab("Identify", id="identify"):
                with gr.Row():
                    with gr.Column():
                        query = gr.Image(type="filepath", label="Vehicle image", sources=["upload", "clipboard"])
                        run = gr.Button("Identify", variant="primary")
                        gr.Examples(examples, inputs=query, label="Examples (validation vehicles)")
                    with gr.Column():
                        coarse = gr.Label(num_top_classes=5, label="Car model / type")
                        overlay = gr.Image(label="Attention overlay", interactive=False)
                note = gr.Markdown()
                matches = gr.Dataframe(headers=MATCH_COLUMNS, label="Top-5 gallery matches", interactive=False)
                match_images = gr.Gallery(label="Matches", columns=5, height=220)
                run.click(identify, [query, model, items, raw], [coarse, matches, match_images, overlay, note],
                          api_name="identify", preprocess=False)
            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    first = gr.Image(type="filepath", label="Image A", sources=["upload", "clipboard"])
                    second = gr.Image(type="filepath", label="Image B", sources=["upload", "clipboard"])
                go = gr.Button("Compare", variant="primary")
                pairs = sorted(DEFAULT_GALLERY.glob("*_cam1.jpg"))[:2]
                gr.Examples([[str(p), str(p).replace("_cam1", "_cam2")] for p in pairs]
                            + [[str(pairs[0]), str(pairs[1]).replace("_cam1", "_cam2")]],
                            inputs=[first, second], label="Examples")
                with gr.Row():
                    similarity = gr.Number(label="Cosine similarity", precision=4)
                    verdict = gr.Textbox(label="Verdict")
                threshold = gr.Markdown()
                with gr.Row():
                    overlay_a = gr.Image(label="Attention A", interactive=False)
                    overlay_b = gr.Image(label="Attention B", interactive=False)
                go.click(compare, [first, second, model, raw], [similarity, verdict, overlay_a, overlay_b, threshold],
                         api_name="compare", preprocess=False)
            with gr.Tab("Attention browser", id="browse"):
                page = gr.Number(0, visible=False, precision=0)
                with gr.Row():
                    previous = gr.Button("◀ Previous")
                    status = gr.Markdown()
                    following = gr.Button("Next ▶")
                tiles = gr.Gallery(label="Gallery with attention", columns=6, height=520, allow_preview=False)
                previous.click(lambda m, i, p, r: browse(m, i, p - 1, r), [model, items, page, raw], [tiles, page, status],
                               api_name="browse_previous")
                following.click(lambda m, i, p, r: browse(m, i, p + 1, r), [model, items, page, raw], [tiles, page, status],
                                api_name="browse_next")
                tiles.select(pick_from_browser, [model, items, page], [query, tabs], api_visibility="private")
            with gr.Tab("Your gallery", id="gallery"):
                gr.Markdown("Upload several images or a zip of them. File names such as `car_0139_cam1.jpg` "
                            "tell the identity and camera, so matches can be marked. Embeddings are cached "
                            "per model.")
                uploads = gr.File(file_count="multiple", label="Images or .zip")
                with gr.Row():
                    build = gr.Button("Build index", variant="primary")
                    reset = gr.Button("Use the shipped gallery")
                built = gr.Markdown()
                build.click(build_gallery, [uploads, model], [items, built], api_name="build_gallery")
                reset.click(lambda: (None, "Using the shipped gallery."), None, [items, built], api_name="reset_gallery")
        gr.Markdown("Gallery: validation vehicles of the two-camera Vehicle Re-ID dataset by Khoa Nguyen Truong "
                    "(Apache-2.0, see `assets/gallery/ATTRIBUTION.md`).")
        demo.load(lambda m: browse(m, None, 0), [model], [tiles, page, status], api_visibility="private")
    return demo


if __name__ == "__main__":
    build_demo().queue(default_concurrency_limit=2).launch()
